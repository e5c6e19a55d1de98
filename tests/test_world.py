"""The procedural world: determinism, held-out split, caption grammar, rendering, clips, 3D."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from spacetime.world import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    SOLIDS,
    VOCABULARY,
    Camera,
    Clip,
    ClipSpec,
    Primitive,
    PrimitiveSpec,
    Scene,
    SceneSpec,
    clips_to_tensor,
    heldout_clip_prompts,
    heldout_prompts,
    images_to_tensor,
    parse_caption,
    parse_clip_caption,
    parse_primitive_caption,
    render_primitive,
    sample_batch,
    sample_clip_batch,
    sample_clips,
    sample_scene,
    sample_scenes,
)
from spacetime.world.captions import clip_caption, scene_caption
from spacetime.world.clips import HELDOUT_MOTIONS, is_heldout_clip
from spacetime.world.palette import DEFAULT_BACKGROUND
from spacetime.world.primitives import (
    HELDOUT_PRIMITIVES,
    orbit,
    sample_camera,
    sample_primitive,
    sd_box,
    sd_cone,
    sd_cylinder,
    sd_sphere,
    sd_torus,
    trace,
)
from spacetime.world.scenes import BACKGROUND_CHOICES, HELDOUT, combinations, is_heldout

ALL_SCENE_SPECS = [
    SceneSpec(shape, colour, background)
    for colour, shape, background in itertools.product(COLOURS, SHAPES, BACKGROUND_CHOICES)
    if background != colour
]


def test_sample_batch_is_deterministic_in_the_seed():
    images, captions = sample_batch(7, 64)
    again, again_captions = sample_batch(7, 64)
    other, _ = sample_batch(8, 64)
    assert images.shape == (64, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and captions == again_captions
    assert not np.array_equal(images, other)
    scene = sample_scene(np.random.default_rng(3))
    assert scene == sample_scene(np.random.default_rng(3))


def test_heldout_combinations_never_sampled_for_training():
    scenes = sample_scenes(np.random.default_rng(0), 5000, "train")
    assert not any(is_heldout(s.colour, s.shape, s.background) for s in scenes)
    assert not set(heldout_prompts()) & {s.caption() for s in scenes}
    # The training sampler still covers every colour, shape and background, default included.
    assert {s.colour for s in scenes} == set(COLOURS)
    assert {s.shape for s in scenes} == set(SHAPES)
    assert {s.background for s in scenes} == set(BACKGROUND_CHOICES)


def test_heldout_split_is_fixed_balanced_and_parses():
    assert len(HELDOUT) == 20 and len(combinations("train")) == 196
    assert ("green", "circle", None) in HELDOUT  # pinned: the rule must not drift silently
    assert ("orange", "square", "blue") in HELDOUT
    # Composition only: every pair of attributes of a held-out combination is trained on.
    train = combinations("train")
    for colour, shape, background in HELDOUT:
        assert any(c == colour and s == shape for c, s, _ in train)
        assert any(c == colour and b == background for c, _, b in train)
        assert any(s == shape and b == background for _, s, b in train)
    prompts = heldout_prompts()
    assert len(prompts) == len(HELDOUT)
    assert {
        (spec.colour, spec.shape, spec.background) for spec in map(parse_caption, prompts)
    } == HELDOUT
    heldout = sample_scenes(np.random.default_rng(1), 500, "heldout")
    assert all(is_heldout(s.colour, s.shape, s.background) for s in heldout)
    with pytest.raises(ValueError, match="'test'"):
        sample_scenes(np.random.default_rng(1), 1, "test")


def test_captions_round_trip_through_the_parser():
    for spec in ALL_SCENE_SPECS:
        assert parse_caption(scene_caption(spec)) == spec
    assert scene_caption(SceneSpec("square", "orange", "white")) == (
        "an orange square on a white background"
    )
    assert scene_caption(SceneSpec("circle", "red")) == "a red circle"
    # Either article, any case, surrounding spaces and a full stop are accepted.
    assert parse_caption("  An Red circle on an black background. ") == SceneSpec(
        "circle", "red", "black"
    )
    assert parse_caption("red triangle") == SceneSpec("triangle", "red")
    clip = ClipSpec("triangle", "cyan", "up", "purple")
    assert parse_clip_caption(clip_caption(clip)) == clip
    assert parse_primitive_caption("an orange torus") == PrimitiveSpec("torus", "orange")


@pytest.mark.parametrize(
    ("caption", "named"),
    [
        ("a pink circle", "'pink'"),
        ("a red hexagon on a mauve background", "'hexagon', 'mauve'"),
        ("a red cube", "'cube'"),
        ("a circle red", "'circle'"),
        ("a red circle moving left", "'moving'"),
        ("a red circle on a red background", "red object on a red background"),
        ("a red circle on a blue", "end of the caption"),
    ],
)
def test_caption_errors_name_the_bad_word(caption, named):
    with pytest.raises(ValueError, match=named):
        parse_caption(caption)


def test_unknown_word_error_lists_the_vocabulary():
    with pytest.raises(ValueError, match="vocabulary is: a, an, red") as error:
        parse_caption("a red blob")
    assert all(word in str(error.value) for word in VOCABULARY)
    with pytest.raises(ValueError, match="'sideways'"):
        parse_clip_caption("a red circle moving sideways")


def test_vocabulary_covers_every_caption():
    captions = [scene_caption(spec) for spec in ALL_SCENE_SPECS] + heldout_clip_prompts()
    captions += [f"a {colour} {solid}" for colour in COLOURS for solid in SOLIDS]
    words = {word for caption in captions for word in caption.split()}
    assert words == set(VOCABULARY)
    assert len(VOCABULARY) == len(set(VOCABULARY))


def test_palette_is_distinguishable():
    rgb = np.array([*BACKGROUNDS.values(), DEFAULT_BACKGROUND], dtype=float)
    gaps = [np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)]
    assert min(gaps) > 30  # black vs the default dark grey
    objects = np.array(list(COLOURS.values()), dtype=float)
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(objects, 2)) > 95


def test_render_places_the_object_inside_the_frame():
    scenes = sample_scenes(np.random.default_rng(2), 300)
    images, _ = sample_batch(2, 300)
    for scene, image in zip(scenes, images, strict=True):
        background = np.array(BACKGROUNDS.get(scene.background, DEFAULT_BACKGROUND))
        ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert (ring == background).all()
        x, y = scene.centre
        # Just below the centre lies inside every shape, the apex-up triangle included.
        inside = image[int(y + 1), int(x)]
        assert (inside == np.array(COLOURS[scene.colour])).all(), scene
        assert scene.colour != scene.background


def test_render_is_antialiased_with_the_right_area():
    scene = Scene("circle", "white", None, (32.3, 31.7), 12.0)
    image = scene.render().astype(float)
    lo, hi = np.array(DEFAULT_BACKGROUND), np.array(COLOURS["white"])
    alpha = ((image - lo) / (hi - lo)).mean(-1)
    assert ((alpha > 0.05) & (alpha < 0.95)).sum() > 40  # soft rim pixels exist
    assert abs(alpha.sum() - math.pi * 12**2) < 1.0
    square = Scene("square", "red", "blue", (20.0, 40.0), 8.5).render()
    assert square.shape == (64, 64, 3) and square.dtype == np.uint8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": "hexagon"}, "hexagon"),
        ({"colour": "pink"}, "pink"),
        ({"background": "grey"}, "grey"),
        ({"background": "red"}, "both 'red'"),
        ({"centre": (5.0, 30.0)}, "does not fit"),
    ],
)
def test_scene_rejects_invalid_values(kwargs, message):
    base = {"shape": "circle", "colour": "red", "background": None, "centre": (32.0, 32.0)}
    with pytest.raises(ValueError, match=message):
        Scene(**{**base, **kwargs}, size=10.0)


def test_tensor_conversions():
    images, _ = sample_batch(0, 3)
    x = images_to_tensor(images)
    assert x.shape == (3, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    clips, _ = sample_clip_batch(0, 2)
    assert clips_to_tensor(clips).shape == (2, 3, 16, 64, 64)


def test_clips_are_deterministic_and_move_at_constant_speed():
    frames, captions = sample_clip_batch(5, 8)
    again, again_captions = sample_clip_batch(5, 8)
    assert frames.shape == (8, 16, 64, 64, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, again) and captions == again_captions
    for clip in sample_clips(np.random.default_rng(5), 200, frames=24):
        centres = np.array(clip.centres())
        steps = np.diff(centres, axis=0)
        assert np.allclose(steps, steps[0]) and np.isclose(np.abs(steps[0]).sum(), clip.speed)
        assert centres.min() >= clip.size and centres.max() <= 64 - clip.size
    clip = Clip("square", "red", "right", None, (20.0, 30.0), 10.0, 1.5)
    assert clip.caption() == "a red square moving right"
    rendered = clip.render()
    assert rendered.shape == (16, 64, 64, 3)
    assert np.array_equal(rendered[3], clip.scenes()[3].render())
    with pytest.raises(ValueError, match="does not fit"):
        Clip("square", "red", "right", None, (20.0, 30.0), 10.0, 3.0)
    with pytest.raises(ValueError, match="'sideways'"):
        Clip("square", "red", "sideways", None, (20.0, 30.0), 10.0, 1.0)


def test_clip_heldout_split():
    assert len(HELDOUT_MOTIONS) == 10 and {d for *_, d in HELDOUT_MOTIONS} == set(DIRECTIONS)
    train = sample_clips(np.random.default_rng(0), 2000)
    assert not any(is_heldout_clip(c.colour, c.shape, c.direction, c.background) for c in train)
    assert {c.direction for c in train} == set(DIRECTIONS)
    heldout = sample_clips(np.random.default_rng(0), 200, "heldout")
    assert all(is_heldout_clip(c.colour, c.shape, c.direction, c.background) for c in heldout)
    prompts = heldout_clip_prompts()
    assert {c.caption() for c in heldout} <= set(prompts)
    for prompt in prompts:
        spec = parse_clip_caption(prompt)
        assert is_heldout_clip(spec.colour, spec.shape, spec.direction, spec.background)


def test_signed_distance_functions():
    axis = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert torch.allclose(sd_sphere(axis, 0.8), torch.tensor([-0.8, 1.2, 1.2]))
    assert torch.allclose(sd_box(axis, 0.5), torch.tensor([-0.5, 1.5, 1.5]))
    assert torch.allclose(
        sd_box(torch.tensor([[1.5, 1.5, 0.5]]), 0.5), torch.tensor([math.sqrt(2)])
    )
    assert torch.allclose(sd_cylinder(axis, 0.5, 0.6), torch.tensor([-0.5, 1.5, 1.4]))
    assert torch.allclose(
        sd_torus(axis, 0.6, 0.2), torch.tensor([0.4, 1.2, math.hypot(0.6, 2) - 0.2])
    )
    # Cone: base radius 1 at y = -1, apex at y = 1; the apex and base centre are on the surface.
    cone = sd_cone(
        torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 2.0, 0.0], [0, 0, 0]]), 1, 1
    )
    assert torch.allclose(cone, torch.tensor([0.0, 0.0, 1.0, -1 / math.sqrt(5)]), atol=1e-6)
    # Every solid contains the origin's neighbourhood except the torus, whose hole is there.
    for solid in SOLIDS:
        inside = Primitive(solid, "red").sdf(torch.zeros(1, 3)) < 0
        assert bool(inside) == (solid != "torus")
        assert Primitive(solid, "red").sdf(torch.tensor([[0.0, 0.0, 1.01]])) > 0  # in unit ball


def test_camera_convention():
    pose = Camera(0.0, 0.0, 3.0).camera_to_world()
    assert np.allclose(pose, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]])
    side = Camera(0.0, 90.0, 2.0).camera_to_world()
    assert np.allclose(side[:3, 3], [2, 0, 0]) and np.allclose(side[:3, 0], [0, 0, -1])
    for camera in [sample_camera(np.random.default_rng(i)) for i in range(20)]:
        pose = camera.camera_to_world()
        rotation, eye = pose[:3, :3], pose[:3, 3]
        assert np.allclose(rotation.T @ rotation, np.eye(3)) and np.isclose(
            np.linalg.det(rotation), 1
        )
        assert np.isclose(np.linalg.norm(eye), camera.distance)
        assert np.allclose(rotation @ [0, 0, -1], -eye / camera.distance)  # looks at the origin
        assert rotation[1, 1] > 0  # image up is world up-ish
    above = Camera(30.0, 0.0).position()
    assert above[1] > 0
    with pytest.raises(ValueError, match="elevation"):
        Camera(90.0, 0.0)


def test_primitive_render():
    camera = Camera(20.0, 30.0)
    image = render_primitive(Primitive("cube", "red"), camera, background="white")
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert (image[0, 0] == COLOURS["white"]).all()
    centre = image[32, 32].astype(int)
    assert centre[0] > 60 and centre[1] < 30 and centre[2] < 30  # shaded red
    hits = trace(Primitive("sphere", "red"), Camera(0.0, 0.0, 3.0), 32)
    # The centre ray hits the sphere (radius 0.8) at depth 3 - 0.8 with the normal facing back.
    assert bool(hits.mask[16, 16]) and abs(float(hits.depth[16, 16]) - 2.2) < 0.02
    assert torch.allclose(hits.normal[16, 16], torch.tensor([0.0, 0.0, 1.0]), atol=0.05)
    assert not hits.mask[0, 0]
    # The torus's hole shows the background straight down its axis.
    assert not trace(Primitive("torus", "red"), Camera(80.0, 0.0), 32).mask[16, 16]
    assert len(orbit(4)) == 4 and orbit(4)[1].azimuth == 90
    primitives = [sample_primitive(np.random.default_rng(i)) for i in range(200)]
    assert not any((p.colour, p.shape) in HELDOUT_PRIMITIVES for p in primitives)
    assert Primitive("cube", "red").caption() == "a red cube"


def test_zoom_clips_magnify_about_the_centre_and_stay_in_frame():
    from spacetime.world.zoom import (
        MAX_ZOOM,
        MIN_ZOOM,
        ZoomClip,
        render_zoom_clips,
        sample_zoom_clips,
    )

    clips = sample_zoom_clips(np.random.default_rng(4), 300)
    assert not any(is_heldout(c.colour, c.shape, c.background) for c in clips)
    for clip in clips:
        scenes = clip.scenes()  # each one validates that it fits the frame
        sizes = np.array([s.size for s in scenes])
        offsets = np.array([s.centre for s in scenes]) - 32
        ratios = sizes[1:] / sizes[:-1]  # a steady zoom: the same factor every frame
        assert np.allclose(ratios, clip.zoom ** (1 / 15)) and MIN_ZOOM <= clip.zoom <= MAX_ZOOM
        assert np.allclose(offsets / sizes[:, None], offsets[-1] / sizes[-1])
        assert np.isclose(sizes[-1], clip.end_size) and clip.caption() == scenes[0].caption()
    heldout = sample_zoom_clips(np.random.default_rng(4), 50, "heldout")
    assert all(is_heldout(c.colour, c.shape, c.background) for c in heldout)
    frames = render_zoom_clips(clips[:3])
    assert frames.shape == (3, 16, 64, 64, 3)
    assert np.array_equal(frames[1, 7], clips[1].scenes()[7].render())
    with pytest.raises(ValueError, match="zoom must be >= 1"):
        ZoomClip("circle", "red", None, (32.0, 32.0), 10.0, 0.5)
    with pytest.raises(ValueError, match="does not fit"):
        ZoomClip("circle", "red", None, (60.0, 32.0), 10.0, 1.5)


def test_inverted_scenes_swap_object_and_background_colours():
    from spacetime.world.inverted import invertible, render_inverted, sample_invertible

    scenes = sample_invertible(np.random.default_rng(0), 50)
    assert len(scenes) == 50 and all(invertible(s) and not is_heldout(s.colour, s.shape,
                                     s.background) for s in scenes)  # fmt: skip
    scene = Scene("square", "red", "white", (32.0, 32.0), 12.0)
    image = render_inverted([scene])[0]
    assert (image[32, 32] == COLOURS["white"]).all() and (image[2, 2] == COLOURS["red"]).all()
    with pytest.raises(ValueError, match="only scenes on an object-coloured background"):
        render_inverted([Scene("square", "red", None, (32.0, 32.0), 12.0)])
