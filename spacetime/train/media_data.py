"""Real images and clips for training, in place of the world's: a folder or webdataset tar shards.

A **folder** holds media files (videos: .mp4 .webm .mov .mkv .gif; images: .png .jpg .jpeg .webp),
at any depth, each captioned by, in order: a `metadata.jsonl` line {"file_name": ..., "text": ...}
(Hugging Face's imagefolder layout), a `captions.csv` row (columns `file` or `file_name`, and
`caption` or `text`; WebVid's CSVs renamed so), or a `.txt` file beside it with the same stem.
**Tar shards** in the webdataset layout group members by key (`000123.mp4` + `000123.txt`, or a
`.json` with `caption` / `text`); they are read member by member where they lie, never unpacked.
`media:` names a folder, one `.tar`, a glob (`shards/*.tar`) or a brace range
(`shards/{000..009}.tar`).

Each step's batch is drawn at random from the index by (seed, step), so runs resume and split over
processes exactly as on the world. A clip takes `frames` frames `frame_stride` apart from a random
start; every frame is resized (shorter side to `size`, Lanczos) and centre-cropped square. A file
that cannot be decoded, or is too short, is skipped for another draw, and counted: a warning names
it the first time, and the export records the count.
"""

from __future__ import annotations

import csv
import functools
import glob
import io
import json
import re
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spacetime.errors import ConfigError
from spacetime.media import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".gif")
MAX_DRAWS = 50  # draws per batch item before giving up on a source of mostly bad files


@dataclass(frozen=True)
class Item:
    """One media file of the index: its name, how to open its bytes, its caption."""

    name: str
    open: Callable[[], io.BufferedIOBase]
    caption: str

    @property
    def is_video(self) -> bool:
        return Path(self.name).suffix.lower() in VIDEO_SUFFIXES


def index_media(source: str) -> list[Item]:
    """Every captioned media file of a folder or of tar shards, in a fixed order."""
    path = Path(source)
    if path.is_dir():
        items = _index_folder(path)
    else:
        shards = _expand(source)
        if not shards:
            raise ConfigError(f"media {source}: no such folder, tar file or shards")
        items = [item for shard in shards for item in _index_tar(shard)]
    if not items:
        raise ConfigError(f"media {source}: no captioned images or videos found")
    return items


def _expand(pattern: str) -> list[Path]:
    """A brace range (`{000..009}`) and glob wildcards, expanded and sorted."""
    found = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if found:
        low, high = found.group(1), found.group(2)
        width = len(low)
        names = [
            pattern[: found.start()] + str(i).zfill(width) + pattern[found.end() :]
            for i in range(int(low), int(high) + 1)
        ]
        return [Path(n) for n in names if Path(n).is_file()]
    return sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())


def _index_folder(root: Path) -> list[Item]:
    captions = _folder_captions(root)
    items = []
    for file in sorted(root.rglob("*")):
        if file.suffix.lower() not in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES) or not file.is_file():
            continue
        relative = file.relative_to(root).as_posix()
        caption = captions.get(relative)
        sidecar = file.with_suffix(".txt")
        if caption is None and sidecar.is_file():
            caption = sidecar.read_text().strip()
        if caption is not None:
            items.append(Item(relative, functools.partial(file.open, "rb"), caption))
    return items


def _folder_captions(root: Path) -> dict[str, str]:
    """{relative path: caption} from metadata.jsonl or captions.csv, when present."""
    captions = {}
    jsonl = root / "metadata.jsonl"
    if jsonl.is_file():
        for number, line in enumerate(jsonl.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                captions[row["file_name"]] = str(row.get("text", row.get("caption", "")))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"{jsonl} line {number}: expected {{'file_name', 'text'}}"
                ) from None
    table = root / "captions.csv"
    if table.is_file():
        with open(table, newline="") as f:
            for number, row in enumerate(csv.DictReader(f), 2):
                file = row.get("file") or row.get("file_name")
                caption = row.get("caption", row.get("text"))
                if file is None or caption is None:
                    raise ConfigError(
                        f"{table} line {number}: needs columns file (or file_name) and caption "
                        "(or text)"
                    )
                captions[file] = caption
    return captions


def _index_tar(shard: Path) -> list[Item]:
    """webdataset's layout: members grouped by key (name up to the first dot)."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            if member.isfile():
                key, _, ext = member.name.partition(".")
                groups.setdefault(key, {})[ext.lower()] = member
        items = []
        for members in groups.values():
            media = [ext for ext in members if f".{ext}" in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES)]
            caption = _tar_caption(tar, members)
            if media and caption is not None:
                member = members[media[0]]
                items.append(Item(f"{shard}:{member.name}",
                                  lambda m=member: _read_member(shard, m), caption))  # fmt: skip
    return items


def _tar_caption(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> str | None:
    if "txt" in members:
        return tar.extractfile(members["txt"]).read().decode().strip()
    if "json" in members:
        meta = json.loads(tar.extractfile(members["json"]).read())
        found = meta.get("caption", meta.get("text")) if isinstance(meta, dict) else None
        return None if found is None else str(found)
    return None


def _read_member(shard: Path, member: tarfile.TarInfo) -> io.BytesIO:
    """One member's bytes, read at its offset in the shard (no unpacking)."""
    with open(shard, "rb") as f:
        f.seek(member.offset_data)
        return io.BytesIO(f.read(member.size))


class MediaData:
    """Batches of real images or clips and their captions, drawn by (seed, step)."""

    def __init__(self, source: str, size: int, frame_stride: int = 1):
        self.source, self.size, self.stride = source, size, frame_stride
        self.items = index_media(source)
        self.skipped: dict[str, str] = {}  # name → why

    def images(self, seed: int, step: int, batch_size: int) -> tuple[Tensor, list[str]]:
        """(b, 3, size, size) in [-1, 1] and captions; a video gives a random frame."""
        pixels, captions = self.clips(seed, step, batch_size, frames=1)
        return pixels[:, :, 0], captions

    def clips(self, seed: int, step: int, batch_size: int, frames: int) -> tuple[Tensor, list[str]]:
        """(b, 3, t, size, size) in [-1, 1] and captions; videos only (but for frames=1)."""
        pixels, captions = self.draw(seed, step, batch_size, frames, self._decode)
        x = torch.from_numpy(np.stack(pixels)).float() / 127.5 - 1  # (b, t, h, w, 3)
        return x.permute(0, 4, 1, 2, 3).contiguous(), captions  # (b, 3, t, h, w)

    def draw(self, seed: int, step: int, batch_size: int, frames: int, take) -> tuple[list, list]:
        """A step's items, by (seed, step): `take(item, frames, rng)` gives each one's frames
        (pixels, or cached latents) or raises for a file to skip, and another is drawn."""
        rng = np.random.default_rng([seed, step])
        candidates = self.items if frames == 1 else [i for i in self.items if i.is_video]
        if not candidates:
            raise ConfigError(f"media {self.source}: no videos to draw clips from")
        taken, captions = [], []
        for _ in range(batch_size):
            for _attempt in range(MAX_DRAWS):
                item = candidates[int(rng.integers(len(candidates)))]
                try:
                    taken.append(take(item, frames, rng))
                    captions.append(item.caption)
                    break
                except Exception as e:  # an unreadable file is skipped, not fatal
                    self._skip(item, e)
            else:
                raise ConfigError(
                    f"media {self.source}: {MAX_DRAWS} draws in a row failed to decode; "
                    f"{len(self.skipped)} files skipped so far, e.g. {next(iter(self.skipped))}"
                )
        return taken, captions

    def span(self, frames: int) -> int:
        """Source frames a clip of `frames` covers."""
        return (frames - 1) * self.stride + 1

    def _decode(self, item: Item, frames: int, rng: np.random.Generator) -> np.ndarray:
        """uint8 (frames, size, size, 3) from a random start."""
        if item.is_video:
            return pick(_read_frames(item), self.span(frames), self.stride, rng, self.size)
        from PIL import Image

        with item.open() as f, Image.open(f) as image:
            return np.stack([_square(np.asarray(image.convert("RGB")), self.size)])

    def frames_of(self, item: Item) -> np.ndarray:
        """Every frame of an item, preprocessed: uint8 (n, size, size, 3)."""
        if item.is_video:
            return np.stack([_square(frame, self.size) for frame in _read_frames(item)])
        return self._decode(item, 1, np.random.default_rng(0))

    def _skip(self, item: Item, error: Exception) -> None:
        if item.name not in self.skipped:
            print(f"warning: skipping {item.name}: {error}", file=sys.stderr)
        self.skipped[item.name] = str(error)

    def summary(self) -> dict:
        return {"media_files": len(self.items), "media_skipped": len(self.skipped)}


def pick(frames, span: int, stride: int, rng: np.random.Generator, size: int | None = None):
    """`span` frames from a random start, every `stride`-th; squared to `size` when given."""
    if len(frames) < span:
        raise ValueError(f"{len(frames)} frames, {span} needed (frames x stride)")
    start = int(rng.integers(len(frames) - span + 1))
    chosen = frames[start : start + span : stride]
    return chosen if size is None else np.stack([_square(frame, size) for frame in chosen])


def _read_frames(item: Item) -> list[np.ndarray]:
    """Every frame of a video, uint8 (h, w, 3), decoded as the video CLI reads its inputs."""
    from spacetime.media import decode_video

    with item.open() as f:
        return decode_video(f, item.name)[0]


def _square(frame: np.ndarray, size: int) -> np.ndarray:
    """Shorter side resized to `size` (Lanczos), then the centre size x size."""
    from PIL import Image

    image = Image.fromarray(frame)
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                         Image.Resampling.LANCZOS)  # fmt: skip
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))
