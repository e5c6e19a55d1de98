"""The CLIP tokenizer for checkpoints that ship none (original single files).

Stable Diffusion 1.x uses OpenAI CLIP's tokenizer. Its byte-pair vocabulary ships in the package
(assets/clip, MIT, OpenAI) in CLIP's own format; here it is converted once, exactly as CLIP's
``SimpleTokenizer`` reads it, into the vocab.json/merges.txt files transformers' CLIPTokenizer loads.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from spacetime.errors import CheckpointError

BPE_ASSET = "assets/clip/bpe_simple_vocab_16e6.txt.gz"
_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
_START, _END = "<|startoftext|>", "<|endoftext|>"
# SD 1.x's tokenizer/tokenizer_config.json: 77 tokens, padded with the end token
_TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer",
    "model_max_length": 77,
    "bos_token": _START,
    "eos_token": _END,
    "pad_token": _END,
    "unk_token": _END,
    "do_lower_case": True,
    "errors": "replace",
    "add_prefix_space": False,
}


def clip_tokenizer(path: str | os.PathLike | None = None):
    """The tokenizer in folder `path` (or its ``tokenizer/``), or OpenAI CLIP's when `path` is None."""
    from transformers import CLIPTokenizer  # imported lazily: it costs ~0.8 s

    if path is None:
        return CLIPTokenizer.from_pretrained(_builtin_dir(), local_files_only=True)
    folder = Path(path)
    if (folder / "tokenizer").is_dir():  # a diffusers pipeline folder
        folder = folder / "tokenizer"
    if not folder.is_dir():
        raise CheckpointError(f"{path}: no such tokenizer folder")
    try:
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{folder}: cannot load a CLIP tokenizer from it ({e})") from None


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from bytes to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [b for b in range(256) if b not in printable]
    return {
        **{b: chr(b) for b in printable},
        **{b: chr(256 + n) for n, b in enumerate(others)},
    }


def clip_vocab_and_merges(bpe_gz: bytes) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocab (token -> id) and merge list from bpe_simple_vocab_16e6.txt.gz, as CLIP builds them."""
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = [" ".join(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    units = list(bytes_to_unicode().values())
    tokens = [*units, *(u + "</w>" for u in units), *(m.replace(" ", "") for m in merges)]
    tokens += [_START, _END]
    return {token: i for i, token in enumerate(tokens)}, merges


@functools.cache
def _builtin_dir() -> Path:
    """A folder with the converted files, written once: a user cache, else a temporary folder."""
    bpe = resources.files("spacetime").joinpath(BPE_ASSET).read_bytes()
    name = f"clip-vit-l-14-tokenizer-{hashlib.sha256(bpe).hexdigest()[:16]}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spacetime"
    final = cache / name
    if all((final / f).is_file() for f in _FILES):
        return final
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache))
    except OSError:  # no writable cache: a private folder for this process
        staging = Path(tempfile.mkdtemp(prefix=f"spacetime-{name}."))
        final = staging
    _write_files(staging, bpe)
    if staging != final:
        try:
            os.replace(staging, final)  # atomic: readers see all files or none
        except OSError:  # `final` exists: another process got there first, or it is damaged
            if not all((final / f).is_file() for f in _FILES):
                return staging
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _write_files(folder: Path, bpe: bytes) -> None:
    vocab, merges = clip_vocab_and_merges(bpe)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(_TOKENIZER_CONFIG, indent=2))


def _bpe(pieces: tuple[str, ...], ranks: dict[tuple[str, str], int]) -> tuple[str, ...]:
    """Byte-pair merging as CLIP does it: repeatedly merge the best-ranked adjacent pair."""
    while len(pieces) > 1:
        pairs = [(ranks.get(p, float("inf")), i) for i, p in enumerate(itertools.pairwise(pieces))]
        rank, i = min(pairs)
        if rank == float("inf"):
            break
        first, second = pieces[i], pieces[i + 1]
        merged, j = [], 0
        while j < len(pieces):
            if j < len(pieces) - 1 and pieces[j] == first and pieces[j + 1] == second:
                merged.append(first + second)
                j += 2
            else:
                merged.append(pieces[j])
                j += 1
        pieces = tuple(merged)
    return pieces


def word_tokenizer(words: Iterable[str], folder: str | os.PathLike, max_length: int = 77):
    """A CLIP tokenizer whose vocabulary is `words` (one token each) plus single letters.

    Small worlds need no 49k-token vocabulary: merges are generated so every known word becomes
    one token, while unknown words still tokenize, letter by letter.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = [*letters, *(c + "</w>" for c in letters)]
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(w.lower() for w in words):
        pieces = _bpe((*word[:-1], word[-1] + "</w>"), ranks)
        while len(pieces) > 1:  # a new merge only joins this word's two leading pieces
            ranks[(pieces[0], pieces[1])] = len(ranks)
            tokens.append(pieces[0] + pieces[1])
            pieces = _bpe(pieces, ranks)
    vocab = {t: i for i, t in enumerate(dict.fromkeys([*tokens, _START, _END]))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in ranks)
    (folder / "merges.txt").write_text(merges)
    from transformers import CLIPTokenizer

    config = {**_TOKENIZER_CONFIG, "model_max_length": max_length}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return CLIPTokenizer.from_pretrained(str(folder))
