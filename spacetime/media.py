"""Reading inputs (images, videos) and writing results to disk atomically: nothing half-written
on error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from spacetime import checks
from spacetime.errors import ArgumentValueError, SpacetimeError
from spacetime.formats.weights import atomic_write
from spacetime.tempfiles import clear_stale, temp_folder, writable_place

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_writable(path: Path, suffixes: tuple[str, ...]) -> None:
    """Fail before any work unless `path` can be written: a known extension, not a folder, a name
    the file system takes, and a folder that exists or can be made and takes new files."""
    if path.suffix.lower() not in suffixes:
        raise SpacetimeError(f"cannot write {path}: extension must be one of {', '.join(suffixes)}")
    # os.path's tests answer False where pathlib's raise (a name over the file system's limit)
    if os.path.isdir(path):
        raise SpacetimeError(f"cannot write {path}: it is a folder")
    try:
        clear_stale(writable_place(path))  # what a killed earlier run left beside its target
    except OSError as e:
        raise SpacetimeError(f"cannot write {path}: {e}") from None


def numbered(path: Path, count: int) -> list[Path]:
    """out.png for one image; out-0.png, out-1.png, … for several."""
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]


def write_image(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """uint8 (h, w, 3) → an image file, via a temporary sibling renamed into place."""
    from PIL import Image

    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}[path.suffix.lower()]
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format=fmt))


VIDEO_SUFFIXES = (".mp4", ".gif", ".webp")


def check_video_target(path: str | os.PathLike) -> None:
    """Fail before any work: a known extension, or a path without one (a new or empty folder)
    for PNG frames, in a writable place."""
    path = Path(path)
    if path.suffix == "":
        if os.path.exists(path) and not os.path.isdir(path):
            raise SpacetimeError(f"cannot write frames into {path}: it is a file")
        check_writable(path / "frame_0000.png", (".png",))
        if path.exists() and any(path.iterdir()):
            raise SpacetimeError(f"cannot write frames into {path}: the folder is not empty")
        return
    check_writable(path, VIDEO_SUFFIXES)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int) -> None:
    """uint8 (t, h, w, 3) → .mp4 (H.264, yuv420p: plays in browsers), .gif, .webp, or a folder of
    frame_0000.png …; written beside the destination and renamed, so nothing is half-written."""
    path = Path(path)
    checks.integer("fps", fps, 1)
    check_video_target(path)
    suffix = path.suffix.lower()
    if suffix == "":
        _write_frames_dir(path, frames)
    elif suffix == ".mp4":
        atomic_write(path, lambda tmp: _write_mp4(tmp, frames, fps))
    else:
        atomic_write(path, lambda tmp: _write_animation(tmp, frames, fps, suffix))


def _write_mp4(tmp: Path, frames: np.ndarray, fps: int) -> None:
    import av

    # yuv420p needs even sizes: pad the last row/column by repetition if needed.
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_animation(tmp: Path, frames: np.ndarray, fps: int, suffix: str) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    fmt = "GIF" if suffix == ".gif" else "WEBP"
    extra = {"lossless": True} if fmt == "WEBP" else {}
    images[0].save(
        tmp, format=fmt, save_all=True, append_images=images[1:], duration=round(1000 / fps),
        loop=0, **extra,
    )  # fmt: skip


def _write_frames_dir(path: Path, frames: np.ndarray) -> None:
    import shutil

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(path.parent)
    try:
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"frame_{i:04d}.png")
        if path.exists():
            path.rmdir()  # empty (checked before any work)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 (h, w, 3) RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ArgumentValueError(f"cannot read image {path}: {e}") from None


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """A video as uint8 (t, h, w, 3) RGB frames and its frame rate (None where the input has
    none): a folder of images (in name order), an animated .gif/.webp (Pillow), or any video
    file PyAV decodes (.mp4, .mov, .webm, ...)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        frames, fps = [read_image(f) for f in files], None
        sizes = {f.shape for f in frames}
        if len(sizes) > 1:
            raise ArgumentValueError(f"the frames in {path} differ in size: {sorted(sizes)}")
    elif not path.is_file():
        raise ArgumentValueError(f"no video at {path}")
    else:
        frames, fps = decode_video(path, str(path))
    if not frames:
        raise ArgumentValueError(f"{path} has no frames")
    return np.stack(frames), fps


def decode_video(source: Path | BinaryIO, name: str) -> tuple[list[np.ndarray], float | None]:
    """A video file, or a binary stream of one (a tar member), as uint8 (h, w, 3) RGB frames and
    its frame rate: Pillow for an animated .gif/.webp, PyAV for the rest; `name` picks which and
    names it in errors."""
    if Path(name).suffix.lower() in (".gif", ".webp"):
        return _read_animation(source, name)
    return _read_with_av(source, name)


def _read_animation(source: Path | BinaryIO, name: str) -> tuple[list[np.ndarray], float | None]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)]
            duration = image.info.get("duration")
    except (OSError, UnidentifiedImageError) as e:
        raise ArgumentValueError(f"cannot read video {name}: {e}") from None
    return frames, (1000 / duration if duration else None)


def _read_with_av(source: Path | BinaryIO, name: str) -> tuple[list[np.ndarray], float | None]:
    import av

    try:
        with av.open(str(source) if isinstance(source, Path) else source) as container:
            if not container.streams.video:
                raise ArgumentValueError(f"{name} has no video stream")
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            rate = stream.average_rate
    except av.error.FFmpegError as e:
        raise ArgumentValueError(f"cannot read video {name}: {e}") from None
    return frames, (float(rate) if rate else None)
