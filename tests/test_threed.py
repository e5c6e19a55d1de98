"""spacetime.threed: field, volume renderer, SDS, regularisers, mesh export, metrics, mesh renders."""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
import trimesh

from spacetime.errors import SpacetimeError
from spacetime.formats.clip_tokenizer import Tokenizer
from spacetime.formats.diffusers import Components
from spacetime.models.clip import CLIPTextConfig, CLIPTextModel
from spacetime.models.text import TextEncoder
from spacetime.models.unet import UNet2DCondition, UNetConfig
from spacetime.models.vae import AutoencoderKL, VAEConfig
from spacetime.sampling import NoiseSchedule
from spacetime.threed.cameras import CameraRange, camera_matrices, orbit_views
from spacetime.threed.export import (
    decimate,
    extract_mesh,
    marching_cubes,
    smooth,
    without_fins,
    write_mesh,
)
from spacetime.threed.field import Field, FieldConfig, lattice_points
from spacetime.threed.guidance import (
    MultiViewGuidance,
    SingleViewGuidance,
    view_direction,
)
from spacetime.threed.metrics import compare, inside_mesh, render_views, volume_iou
from spacetime.threed.optimise import OptimiseConfig, optimise
from spacetime.threed.rasterise import turntable
from spacetime.threed.regularisers import (
    opacity_entropy,
    orientation,
    sparsity,
    total_variation,
)
from spacetime.threed.render import Shading, render
from spacetime.threed.sds import (
    SDSConfig,
    sds_gradient,
    sds_loss,
    timestep_range,
    weight,
)
from spacetime.world.palette import COLOURS
from spacetime.world.primitives import Camera, Primitive, orbit, render_primitive

SMALL = FieldConfig(resolution=32, levels=2)


def tiny_components(folder: Path) -> Components:
    """A tiny random model built natively (no diffusers: seconds faster than tiny.sd_pipeline):
    U-Net on 8x8 latents, an f4 VAE (so 32 px images), a character-level CLIP tokenizer."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_folder(tiny.write_tokenizer_files(folder / "tokenizer"))
    n = len(tokenizer.get_vocab())
    clip = CLIPTextConfig(
        vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1,
    )  # fmt: skip
    return Components(
        tiny.randomize(UNet2DCondition(UNetConfig.from_diffusers(tiny.UNET_CONFIGS["sd1"])), 0),
        tiny.randomize(AutoencoderKL(VAEConfig.from_diffusers(tiny.VAE_CONFIGS["f4"])), 1, 0.02),
        TextEncoder(tokenizer, CLIPTextModel(clip)).eval(),
        NoiseSchedule(),
    )


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    return tiny_components(tmp_path_factory.mktemp("threed"))


def constant_field(sdf: float) -> Field:
    field = Field(SMALL)
    with torch.no_grad():
        field.grids[-1][0] = sdf - field.prior
    return field


# --- field and volume renderer ------------------------------------------------------------------


def test_empty_field_is_transparent_and_a_solid_one_opaque():
    cams = orbit(2)
    with torch.no_grad():
        empty = render(constant_field(1.0), cams, resolution=16, samples=32)
        solid = render(constant_field(-1.0), cams, resolution=16, samples=32)
    assert empty.opacity.max() < 1e-6
    # Every ray through the unit ball is blocked; rays past it see the background.
    origins, directions = zip(*(c.rays(16) for c in cams), strict=True)
    b = (torch.stack(origins) * torch.stack(directions)).sum(-1)
    through = b * b - (9 - 1) > 0.05  # camera distance 3, unit ball, a margin off the rim
    assert solid.opacity[through].min() > 0.99
    assert solid.opacity[b * b - 8 < 0].max() == 0


def test_density_blob_starts_opaque_at_the_centre_and_empty_at_the_rim():
    field = Field(FieldConfig(resolution=32, levels=2, kind="density"))
    with torch.no_grad():
        out = render(field, [Camera(0, 0)], resolution=16, samples=48)
    assert out.opacity[0, 8, 8] > 0.95
    assert out.opacity[0, 0, 0] < 1e-3


@pytest.mark.parametrize("kind", ["sdf", "density"])
def test_field_of_a_primitive_renders_like_the_primitive(kind):
    primitive = Primitive("cube", "green")
    field = Field.from_sdf(primitive, FieldConfig(resolution=64, levels=2, kind=kind))
    cams = [Camera(20, 30), Camera(-5, 200)]
    with torch.no_grad():
        out = render(field, cams, resolution=32, samples=96)
    ours = out.rgb.permute(0, 2, 3, 1).numpy() * 255
    truth = np.stack([render_primitive(primitive, c, resolution=32) for c in cams])
    assert np.abs(ours - truth).mean() < 4  # of 255: edges differ by a pixel's antialiasing
    # Depth and normals are those of the surface where the view is opaque.
    centre = out.depth[0, 16, 16]
    assert 1.9 < centre < 2.6
    assert (out.normal[:, :, 16, 16].norm(dim=1) > 0.9).all()


def test_shading_modes():
    field = Field.from_sdf(Primitive("sphere", "blue"), SMALL)
    cam = [Camera(0, 0)]
    with torch.no_grad():
        albedo = render(field, cam, 8, 32, Shading("albedo")).rgb[0, :, 4, 4]
        plain = render(field, cam, 8, 32, Shading("textureless")).rgb[0, :, 4, 4]
    assert torch.allclose(albedo, torch.tensor(COLOURS["blue"]) / 255, atol=0.02)
    assert torch.allclose(plain, plain[0].expand(3))  # white albedo: grey shading
    with pytest.raises(ValueError, match="unknown shading"):
        Shading("glossy")


def test_training_cameras_are_an_orbit_on_the_world_sphere():
    where = CameraRange()
    cams = orbit_views(torch.Generator().manual_seed(3), 4, where)
    assert len({c.elevation for c in cams}) == 1 and len({c.distance for c in cams}) == 1
    assert where.elevation[0] <= cams[0].elevation <= where.elevation[1]
    gaps = np.diff([c.azimuth for c in cams]) % 360
    assert np.allclose(gaps, 90)
    matrices = camera_matrices(cams)
    assert matrices.shape == (4, 4, 4)
    assert np.allclose(matrices[2].numpy(), cams[2].camera_to_world(), atol=1e-6)


# --- score distillation --------------------------------------------------------------------------


def test_sds_loss_gradient_is_exactly_the_sds_gradient():
    z = torch.randn(1, 4, 4, 8, 8, requires_grad=True)
    grad = torch.randn(1, 4, 4, 8, 8)
    sds_loss(z, grad).backward()
    assert torch.equal(z.grad, grad)


@pytest.mark.parametrize("weighting", ["sds", "uniform", "sigma"])
def test_sds_gradient_is_weighted_noise_residual(weighting):
    z = torch.randn(2, 4, 8, 8)
    abar = torch.tensor(0.3)
    predicted = torch.randn(2, 4, 8, 8)
    grad = sds_gradient(lambda z_t: predicted, z, abar, weighting, torch.Generator().manual_seed(1))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    w = {"sds": 1 - 0.3, "uniform": 1.0, "sigma": math.sqrt(0.7 / 0.3)}[weighting]
    assert torch.allclose(grad, w * (predicted - noise), atol=1e-6)
    assert torch.allclose(weight(abar, weighting), torch.tensor(w))


def test_guidance_loss_backpropagates_w_times_eps_residual(components):
    guide = MultiViewGuidance(components, "a red cube", cfg=SDSConfig(guidance=7.0))
    cams = guide.sample_cameras(torch.Generator().manual_seed(0))
    z = torch.randn(1, 4, 4, 8, 8, requires_grad=True)
    guide.encode = lambda rgb: z  # the latents as a leaf, to read their gradient
    result = guide(torch.zeros(4, 3, 16, 16), cams, 0, 10, torch.Generator().manual_seed(5))
    result.loss.backward()
    # Replay the guidance's draws: the timestep, then the noise.
    g = torch.Generator().manual_seed(5)
    lo, hi = timestep_range(guide.cfg, 0, 10, 1000)
    t = int(torch.randint(lo, hi + 1, (), generator=g))
    assert t == result.timestep
    noise = torch.randn(z.shape, generator=g)
    abar = components.schedule.alphas_cumprod[t]
    z_t = abar.sqrt() * z.detach() + (1 - abar).sqrt() * noise
    with torch.no_grad():
        eps_hat = guide.predict_noise(z_t, t, cams, guide.context(cams))
    assert torch.allclose(z.grad, (1 - abar) * (eps_hat - noise), atol=1e-5)


def test_non_finite_gradient_skips_the_step(components):
    guide = SingleViewGuidance(components, "a red cube")
    guide.predict_noise = lambda *a: torch.full((1, 4, 1, 8, 8), float("nan"))
    cams = guide.sample_cameras(torch.Generator())
    result = guide(torch.rand(1, 3, 16, 16), cams, 0, 5, torch.Generator())
    assert result.loss is None
    # A run where every step is skipped fails rather than returning an untrained field.
    with pytest.raises(SpacetimeError, match="all 2 steps gave non-finite"):
        optimise(guide, OptimiseConfig(steps=2, resolution=8, samples=8, grid=SMALL))


def test_t_max_anneals_linearly_or_by_square_root():
    linear = SDSConfig(t_min=0.02, t_max=0.98, t_max_end=0.5, anneal="linear")
    assert timestep_range(linear, 0, 101, 1000) == (20, 979)
    assert timestep_range(linear, 50, 101, 1000) == (20, round(0.74 * 999))
    assert timestep_range(linear, 100, 101, 1000) == (20, round(0.5 * 999))
    root = SDSConfig(anneal="sqrt")
    assert timestep_range(root, 25, 101, 1000)[1] == round((0.98 - 0.48 * 0.5) * 999)
    assert timestep_range(SDSConfig(anneal="none"), 100, 101, 1000) == (20, 979)
    with pytest.raises(SpacetimeError, match="unknown weighting"):
        SDSConfig(weighting="snr")
    with pytest.raises(SpacetimeError, match="guidance must be >= 0"):
        SDSConfig(guidance=-1)


def test_view_prompts_only_with_a_vocabulary_that_has_the_words(components):
    assert [view_direction(Camera(10, a)) for a in (0, 40, 90, 180, 250, 330)] == [
        "front", "front", "side", "back", "side", "front",
    ]  # fmt: skip
    assert view_direction(Camera(70, 180)) == "overhead"
    # The tiny model's character-level vocabulary lacks the words: no suffixes.
    plain = SingleViewGuidance(components, "a red cube")
    assert not plain.view_prompts
    # An open vocabulary (unknown_words always empty) gets them.
    open_vocab = replace(components, text_encoder=OpenVocabulary(components.text_encoder))
    guide = SingleViewGuidance(open_vocab, "a red cube")
    assert "a red cube, back view" in open_vocab.text_encoder.seen
    cond, _ = guide.context([Camera(0, 180)])
    assert torch.equal(cond, components.text_encoder.encode(["a red cube, back view"]))


class OpenVocabulary(torch.nn.Module):
    """A text encoder that knows every word (as CLIP's BPE does), recording what it encodes."""

    def __init__(self, text):
        super().__init__()
        self.text, self.seen = text, []

    def unknown_words(self, prompt):
        return []

    def encode(self, prompts):
        self.seen.extend(prompts)
        return self.text.encode(prompts)


class CameraAwareStandIn(torch.nn.Module):
    """The multi-view U-Net's interface (x (b, c, v, h, w), cameras (b, v, 4, 4)), recording calls."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.config, self.takes_cameras = unet, unet.config, True
        self.calls = []

    def forward(self, x, timestep, context, cameras=None):
        self.calls.append((x.shape, None if cameras is None else cameras.clone()))
        return self.unet(x, timestep, context)


def test_multiview_guidance_passes_views_jointly_with_their_cameras(components):
    stand_in = CameraAwareStandIn(components.unet)
    mv = replace(components, unet=stand_in)
    guide = MultiViewGuidance(mv, "a red cube", cfg=SDSConfig(guidance=5.0))
    assert guide.camera_aware and not components.unet.takes_cameras
    assert not MultiViewGuidance(components, "a red cube").camera_aware  # read off the U-Net
    cams = guide.sample_cameras(torch.Generator().manual_seed(1))
    guide(torch.rand(4, 3, 16, 16), cams, 0, 1, torch.Generator())
    ((shape, cameras),) = stand_in.calls
    assert shape == (2, 4, 4, 8, 8)  # (uncond + cond, c, v, h, w) at the model's 32 px
    assert torch.equal(cameras, camera_matrices(cams).expand(2, 4, 4, 4))
    # The single-view guide gives a camera-aware model one view and its camera.
    single = SingleViewGuidance(mv, "a red cube")
    single(torch.rand(1, 3, 16, 16), cams[:1], 0, 1, torch.Generator())
    assert stand_in.calls[-1][0] == (2, 4, 1, 8, 8) and stand_in.calls[-1][1].shape == (2, 1, 4, 4)


def test_optimisation_is_seeded_and_moves_the_field(components):
    guide = MultiViewGuidance(components, "a red cube")
    cfg = OptimiseConfig(steps=2, resolution=16, samples=16, grid=SMALL, seed=4)
    reports = []
    first = optimise(guide, cfg, reports.append)
    second = optimise(guide, cfg)
    assert [r.step for r in reports] == [1, 2] and all(np.isfinite(r.loss) for r in reports)
    assert any(g.abs().sum() > 0 for g in first.grids)
    for a, b in zip(first.grids, second.grids, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(SpacetimeError, match="steps must be >= 1"):
        OptimiseConfig(steps=0)


# --- regularisers ----------------------------------------------------------------------------


def test_opacity_entropy_pushes_opacity_to_zero_or_one():
    values = opacity_entropy(torch.tensor([0.0])), opacity_entropy(torch.tensor([1.0]))
    assert all(v < 1e-3 for v in values)
    assert torch.isclose(opacity_entropy(torch.tensor([0.5])), torch.tensor(math.log(2)))
    o = torch.tensor([0.3, 0.8], requires_grad=True)
    opacity_entropy(o).backward()
    assert o.grad[0] > 0 and o.grad[1] < 0  # descent lowers 0.3 and raises 0.8


def test_orientation_penalises_visible_normals_facing_away():
    directions = torch.tensor([[0.0, 0.0, -1.0]])  # looking down -z
    towards = torch.tensor([[[0.0, 0.0, 1.0]]])
    away = torch.tensor([[[0.0, 0.6, -0.8]]], requires_grad=True)
    w = torch.tensor([[0.5]], requires_grad=True)
    assert orientation(w, towards, directions) == 0
    loss = orientation(w, away, directions)
    assert torch.isclose(loss, torch.tensor(0.5 * 0.8**2))
    loss.backward()
    assert w.grad is None  # weights are held fixed (Ref-NeRF's stop-gradient): normals turn
    assert away.grad[0, 0, 2] < 0  # descent raises n_z: towards the camera


def test_sparsity_and_smoothness_terms():
    assert sparsity(torch.tensor([0.0, 1.0, 0.5])) == 0.5
    assert total_variation(torch.ones(2, 4, 4, 4)) == 0
    ramp = torch.arange(4.0).expand(1, 4, 4, 4)  # steps of 1 along x only
    assert total_variation(ramp) == 1
    # A true signed distance is eikonal; a squashed one is not.
    assert Field(SMALL).eikonal() < 0.05
    squashed = Field(SMALL)
    with torch.no_grad():
        squashed.grids[-1][0] = -0.8 * squashed.prior
    assert squashed.eikonal() > 0.5


# --- meshes ------------------------------------------------------------------------------------


def sphere_sdf_grid(resolution):
    sdf = Primitive("sphere", "red").sdf(lattice_points(resolution))
    return sdf.permute(2, 1, 0).numpy()  # (z, y, x) → (x, y, z)


def test_marching_cubes_of_a_sphere_matches_the_primitive():
    vertices, faces = marching_cubes(sphere_sdf_grid(48), 0.0, inside="below")
    mesh = trimesh.Trimesh(vertices, faces)
    assert mesh.is_watertight and mesh.volume > 0  # outward winding
    metrics = compare(mesh, Primitive("sphere", "red"), resolution=48)
    assert metrics.iou > 0.95
    assert metrics.accuracy < 0.005 and metrics.chamfer < 0.02


def test_extracted_mesh_is_clean_and_coloured_by_the_albedo():
    primitive = Primitive("torus", "yellow")
    field = Field.from_sdf(primitive, FieldConfig(resolution=48, levels=2))
    with torch.no_grad():  # a floater far from the torus, and a bubble inside its tube
        points = lattice_points(48)
        floater = (points - torch.tensor([0.0, 0.8, 0.0])).norm(dim=-1) < 0.06
        field.grids[-1][0][floater] = -0.05 - field.prior[floater]
    mesh = extract_mesh(field, 48)
    assert len(mesh.split(only_watertight=False)) == 1  # the floater is dropped
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert np.abs(mesh.visual.vertex_colors[:, :3].astype(int) - COLOURS["yellow"]).max() <= 2
    assert volume_iou(mesh, primitive, 48) > 0.9


@pytest.fixture(scope="module")
def torus_mesh():
    return extract_mesh(Field.from_sdf(Primitive("torus", "yellow"), SMALL), 48)


def test_decimation_keeps_the_solid_with_the_faces_asked_for(torus_mesh):
    primitive = Primitive("torus", "yellow")
    field = Field.from_sdf(primitive, SMALL)
    mesh = extract_mesh(field, 48, faces=1500)
    assert len(torus_mesh.faces) > 9000 and len(mesh.faces) == 1500
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert len(mesh.split(only_watertight=False)) == 1 and mesh.euler_number == 0
    full, fewer = volume_iou(torus_mesh, primitive, 48), volume_iou(mesh, primitive, 48)
    assert fewer > full - 0.02, (full, fewer)
    # coloured after decimation: every vertex has its colour
    assert np.abs(mesh.visual.vertex_colors[:, :3].astype(int) - COLOURS["yellow"]).max() <= 2


def test_too_few_faces_for_the_solid_are_raised_until_it_holds(torus_mesh):
    """Quadric collapse to 16 faces tears this torus; the count doubles instead."""
    torn = torus_mesh.simplify_quadric_decimation(face_count=16)
    assert len(torn.split(only_watertight=False)) > 1 or not torn.is_watertight
    mesh = decimate(torus_mesh, 16)
    assert 16 < len(mesh.faces) <= 64
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1
    assert mesh.euler_number == torus_mesh.euler_number == 0  # still a torus
    assert decimate(mesh, 10 * len(mesh.faces)) is mesh  # nothing to remove


def test_smoothing_takes_the_bumps_and_keeps_the_solid():
    """Volume-keeping Laplacian smoothing of a bumpy sphere: flatter between neighbouring faces,
    the same volume (plain Laplacian smoothing shrinks it), still watertight, nearer the sphere."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    bumps = np.random.default_rng(0).normal(0, 0.01, len(sphere.vertices))
    bumpy = trimesh.Trimesh(sphere.vertices + sphere.vertex_normals * bumps[:, None], sphere.faces)
    out = smooth(bumpy.copy(), 20)
    angle = lambda m: np.degrees(m.face_adjacency_angles).mean()  # noqa: E731
    assert angle(out) < 0.3 * angle(bumpy)
    assert abs(out.volume / bumpy.volume - 1) < 1e-3 and out.is_watertight
    error = lambda m: np.abs(np.linalg.norm(m.vertices, axis=1) - 0.5).mean()  # noqa: E731
    assert error(out) < 0.5 * error(bumpy)
    shrunk = bumpy.copy()
    trimesh.smoothing.filter_laplacian(shrunk, lamb=0.5, iterations=20, volume_constraint=False)
    assert shrunk.volume < 0.95 * bumpy.volume  # what the volume constraint is for


def test_a_fin_is_dropped_and_the_solid_closes_again():
    """A face and its reverse sticking out of an edge, as quadric collapse can fold them."""
    sphere = trimesh.creation.icosphere(subdivisions=2)
    a, b = sphere.edges_unique[0]
    n = len(sphere.vertices)
    vertices = np.vstack([sphere.vertices, 1.5 * sphere.vertices[a]])
    finned = trimesh.Trimesh(vertices, np.vstack([sphere.faces, [[a, b, n], [n, b, a]]]))
    assert not finned.is_watertight
    out = without_fins(finned)
    assert np.array_equal(out.faces, sphere.faces)
    out.remove_unreferenced_vertices()
    assert out.is_watertight and out.is_winding_consistent


def test_of_two_solids_only_the_larger_is_kept():
    """A second solid of a third the first one's area is no floater, but the mesh is one piece."""
    field = Field.from_sdf(Primitive("sphere", "red"), FieldConfig(resolution=48, levels=2))
    with torch.no_grad():
        points = lattice_points(48)
        sdf = torch.minimum(points.norm(dim=-1) - 0.45, (points - 0.7).norm(dim=-1) - 0.25)
        field.grids[-1][0] = sdf - field.prior
    mesh = extract_mesh(field, 48)
    assert len(mesh.split(only_watertight=False)) == 1 and mesh.is_watertight
    assert np.linalg.norm(mesh.vertices, axis=1).max() < 0.5  # the sphere at the centre


def test_inside_mesh_and_renders_of_a_box_with_large_faces():
    # 12 big triangles, unlike marching cubes' small ones: exercises the large-box path.
    box = trimesh.creation.box(extents=(1.1, 1.1, 1.1))
    box.unmerge_vertices()  # vertices per face: flat normals, hard edges
    box.visual.vertex_colors = np.array([*COLOURS["red"], 255], np.uint8)
    cube = Primitive("cube", "red")
    inside = inside_mesh(box, 16)
    centres = -1 + (np.arange(16) + 0.5) / 8  # none on the box's faces
    expected = np.abs(centres) < 0.55
    assert np.array_equal(inside, expected[:, None, None] & expected[None, :, None] & expected)
    cams = [Camera(20, 30), Camera(35, 250)]
    ours = render_views(box, cams, resolution=32).astype(float)
    truth = np.stack([render_primitive(cube, c, resolution=32) for c in cams])
    assert np.abs(ours - truth).mean() < 1.5


def test_renders_of_a_perfect_mesh_look_like_the_primitive():
    primitive = Primitive("cone", "cyan")
    mesh = extract_mesh(Field.from_sdf(primitive, FieldConfig(resolution=64, levels=2)), 64)
    cams = [Camera(15, 10), Camera(40, 160)]
    ours = render_views(mesh, cams, resolution=32).astype(float)
    truth = np.stack([render_primitive(primitive, c, resolution=32) for c in cams])
    assert ours.dtype == float and np.abs(ours - truth).mean() < 3
    frames = turntable(mesh, frames=3, resolution=16)
    assert frames.shape == (3, 16, 16, 3) and frames.dtype == np.uint8


@pytest.fixture(scope="module")
def sphere_mesh():
    return extract_mesh(Field.from_sdf(Primitive("sphere", "purple"), SMALL), 24)


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_mesh_round_trips_through_each_format(sphere_mesh, tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    write_mesh(sphere_mesh, path)
    back = trimesh.load(path, process=False, force="mesh")
    assert len(back.vertices) == len(sphere_mesh.vertices)
    assert len(back.faces) == len(sphere_mesh.faces)
    if suffix == ".glb":  # glTF's COLOR_0 is linear: sRGB again, it is the colour written
        (geometry,) = trimesh.load(path, process=False).geometry.values()
        linear = geometry.visual.vertex_attributes["color"]
        srgb = np.round(255 * linear_to_srgb(linear)).astype(int)
        assert np.array_equal(srgb, sphere_mesh.visual.vertex_colors[:, :3])
    else:
        assert np.array_equal(back.visual.vertex_colors, sphere_mesh.visual.vertex_colors)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def linear_to_srgb(c):
    """IEC 61966-2-1's encoding of linear [0, 1] values."""
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def test_a_vertex_coloured_glb_has_a_matte_material(sphere_mesh, tmp_path):
    """glTF's default material is fully metallic: without one the mesh would show dark."""
    path = tmp_path / "m.glb"
    write_mesh(sphere_mesh, path)
    (geometry,) = trimesh.load(path, process=False).geometry.values()
    material = geometry.visual.material
    assert (material.metallicFactor, material.roughnessFactor) == (0.0, 1.0)


def test_unknown_mesh_extension_writes_nothing(sphere_mesh, tmp_path):
    with pytest.raises(SpacetimeError, match="extension must be one of .glb, .obj, .ply"):
        write_mesh(sphere_mesh, tmp_path / "m.stl")
    assert not any(tmp_path.iterdir())
