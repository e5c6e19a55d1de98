"""The --control flags of the image and video command lines: which ControlNets, what each reads,
at what scale and over which share of the steps.

Each `--control` takes, in the order given, one condition: `--control-image IMG` (every frame),
`--control-video CLIP` (frame by frame) or, for a SparseCtrl network, a run of `--keyframe
N:IMAGE`. Scales, starts, ends and preprocessors come one per `--control`, or one for all.
Everything is checked and every image read before any weights load.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from spacetime.errors import ArgumentValueError

CONTROLNET_CONFIG = "config.json"


class _InOrder(argparse._AppendAction):
    """Appends (flag, value) to `control_inputs`, so conditions keep their order across flags (a
    repeatable flag: batch jobs give it a list)."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "control_inputs", None) or [])
        items.append((self.dest, values))
        namespace.control_inputs = items


def add_control_flags(parser: argparse.ArgumentParser, video: bool) -> None:
    from spacetime.checks import PREPROCESSORS
    from spacetime.formats.shipped import shipped

    names = ", ".join(shipped("controlnet", CONTROLNET_CONFIG)) or "none in this install"
    parser.set_defaults(control_inputs=[])
    group = parser.add_argument_group("structure control (ControlNet, SparseCtrl)")
    group.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="PATH",
        help="a ControlNet: a diffusers ControlNetModel folder, an original single file "
        "(control_v11p_sd15_*.pth/.safetensors)"
        + (", a SparseCtrl file (v3_sd15_sparsectrl_*.ckpt) or folder" if video else "")
        + f", or a shipped name ({names}); repeatable, their residuals add up. Each takes the "
        "next condition flag, in order",
    )
    group.add_argument(
        "--control-image",
        action=_InOrder,
        dest="image",
        metavar="IMG",
        help="the condition image of the next --control (png/jpg/webp), resized (Lanczos) to "
        "the output size; its size is the default --height/--width"
        + ("; a clip gets it on every frame" if video else ""),
    )
    if video:
        group.add_argument(
            "--control-video",
            action=_InOrder,
            dest="video",
            metavar="CLIP",
            help="a condition per frame for the next --control (a clip as --init-video reads "
            "them); its first --frames frames, its length the default --frames",
        )
        group.add_argument(
            "--keyframe",
            action=_InOrder,
            dest="keyframe",
            metavar="N:IMAGE",
            help="SparseCtrl: IMAGE conditions frame N; repeat for more key frames (a run of "
            "them is the condition of the next --control, a SparseCtrl network). With an RGB "
            "SparseCtrl and `0:IMAGE` the clip starts from that picture",
        )
    group.add_argument(
        "--control-scale",
        action="append",
        type=float,
        default=[],
        metavar="S",
        help="how strongly each ControlNet steers (default 1.0); one per --control, or one for all",
    )
    group.add_argument(
        "--control-start",
        action="append",
        type=float,
        default=[],
        metavar="F",
        help="share of the steps before a ControlNet starts acting, in [0, 1) (default 0); one "
        "per --control, or one for all",
    )
    group.add_argument(
        "--control-end",
        action="append",
        type=float,
        default=[],
        metavar="F",
        help="share of the steps after which it stops, in (0, 1] (default 1); one per "
        "--control, or one for all",
    )
    group.add_argument(
        "--preprocess",
        action="append",
        default=[],
        choices=PREPROCESSORS,
        help="turn each condition image into what its ControlNet reads: canny (edges, as the "
        "canny ControlNets were trained on), mask (the world's layout: the silhouette against "
        "the background), or, with controlnet_aux installed (pip install "
        "'spacetime[control-aux]'), depth, normal, openpose, lineart, hed, mlsd, softedge "
        "(default: the images as given); one per --control, or one for all",
    )
    group.add_argument(
        "--guess-mode",
        action="store_true",
        help="the ControlNets recognise the content without the prompt's help: their residuals "
        "rise from 0.1 to 1 across the skips and skip the unconditional branch (use --guidance "
        "3 to 5)",
    )


@dataclass(frozen=True)
class ControlRequest:
    """One --control, checked: where its network is, its condition images (uint8 (n, h, w, 3)),
    SparseCtrl's key frames, and its schedule."""

    path: Path
    images: np.ndarray  # noqa: F821 (numpy loads with the images, not with --help)
    key_frames: tuple[int, ...]
    scale: float
    start: float
    end: float
    preprocess: str | None


def find_controlnet(spec: str) -> Path:
    """A ControlNet folder or file, or the shipped ControlNet `spec` names."""
    from spacetime.formats.shipped import shipped

    path = Path(spec)
    if path.exists():
        return path
    found = shipped("controlnet", CONTROLNET_CONFIG)
    if spec in found:
        return found[spec].parent
    names = ", ".join(found) or "none in this install"
    raise ArgumentValueError(f"--control {spec}: no such file or folder, nor a shipped ControlNet "
                             f"(shipped: {names})")  # fmt: skip


def check_controls(args: argparse.Namespace) -> list[ControlRequest]:
    """The --control flags, paired with their conditions and checked; images read. Sets
    --height/--width (and --frames, from a --control-video) where not given."""
    import numpy as np

    from spacetime import checks
    from spacetime.cli import size_from
    from spacetime.media import read_image, read_video

    conditions = _grouped(args.control_inputs)
    controls = args.control
    if len(conditions) != len(controls):
        raise ArgumentValueError(
            f"{len(controls)} --control but {len(conditions)} conditions: each --control takes "
            "one --control-image, --control-video or run of --keyframe, in order"
        )
    per = {
        name: _one_each(name, getattr(args, name.replace("-", "_")), len(controls))
        for name in ("control-scale", "control-start", "control-end", "preprocess")
    }
    if args.guess_mode and not controls:
        raise ArgumentValueError("--guess-mode applies to ControlNets (--control)")
    requests = []
    for i, (path, (kind, values)) in enumerate(zip(controls, conditions, strict=True)):
        scale = checks.number(
            "control_scale", per["control-scale"][i] if per["control-scale"] else 1.0
        )
        start = per["control-start"][i] if per["control-start"] else 0.0
        end = per["control-end"][i] if per["control-end"] else 1.0
        if not 0 <= start < end <= 1:
            raise ArgumentValueError(
                f"--control-start and --control-end must satisfy 0 <= start < end <= 1, got "
                f"{start} and {end}"
            )
        keys: tuple[int, ...] = ()
        if kind == "image":
            images = read_image(values[0])[None]
        elif kind == "video":
            images, _ = read_video(values[0])
            if args.frames is None:
                args.frames = len(images)
            frames = checks.integer("frames", args.frames, 1)
            if len(images) < frames:
                raise ArgumentValueError(f"--control-video {values[0]} has {len(images)} frames, "
                                         f"fewer than --frames {frames}")  # fmt: skip
            images = images[:frames]
        else:
            keys, files = zip(*(_keyframe(v) for v in values), strict=True)
            if len(set(keys)) != len(keys):
                raise ArgumentValueError(f"--keyframe frames repeat: {list(keys)}")
            images = [read_image(f) for f in files]
            if len({im.shape for im in images}) > 1:
                raise ArgumentValueError("--keyframe images must share one size")
            images = np.stack(images)
        if i == 0:
            size_from(args, images)
        preprocess = per["preprocess"][i] if per["preprocess"] else None
        requests.append(ControlRequest(find_controlnet(path), images, keys, scale, start, end,
                                       preprocess))  # fmt: skip
    return requests


def load_controls(requests: list[ControlRequest], unet, guess_mode: bool) -> list:
    """The checked requests as `spacetime.control.Control`s: networks loaded (single files take
    the U-Net's heads), images preprocessed."""
    import numpy as np

    from spacetime.control import Control
    from spacetime.formats.controlnet import load_controlnet
    from spacetime.preprocess import preprocessor

    controls = []
    for request in requests:
        net = load_controlnet(request.path, unet.config)
        sparse = net.control_config.sparse
        if sparse != bool(request.key_frames):
            raise ArgumentValueError(
                f"--control {request.path} is a {'SparseCtrl' if sparse else 'ControlNet'} "
                "network: "
                + ("give it --keyframe N:IMAGE" if sparse else "give it --control-image or "
                   "--control-video (--keyframe is for SparseCtrl)")
            )  # fmt: skip
        images = request.images
        if request.preprocess is not None:
            run = preprocessor(request.preprocess)
            images = np.stack([run(image) for image in images])
        controls.append(
            Control(
                net,
                images,
                request.scale,
                request.start,
                request.end,
                request.key_frames,
                guess_mode,
            )  # fmt: skip
        )
    return controls


def _grouped(items: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Ordered (flag, value) pairs → one condition per --control: a run of --keyframe is one."""
    groups: list[tuple[str, list[str]]] = []
    for kind, value in items:
        if kind == "keyframe" and groups and groups[-1][0] == "keyframe":
            groups[-1][1].append(value)
        else:
            groups.append((kind, [value]))
    return groups


def _one_each(flag: str, values: list, count: int) -> list:
    """Values of a per-ControlNet flag: none, one for all, or one per --control."""
    if len(values) not in (0, 1, count) or (values and not count):
        raise ArgumentValueError(
            f"--{flag} takes one value for all --control or one per --control ({count}), got "
            f"{len(values)}"
        )
    return values * count if len(values) == 1 else values


def _keyframe(value: str) -> tuple[int, Path]:
    frame, sep, path = value.partition(":")
    if not sep or not frame.strip().isdigit() or not path:
        raise ArgumentValueError(
            f"--keyframe takes N:IMAGE (a frame number and a file), got {value!r}"
        )
    return int(frame), Path(path)
