"""CLIP tokenization behind one small interface, fast to import.

A folder with tokenizer.json (what transformers 5 saves) is read by the Rust `tokenizers` library
directly (~10 ms to import); one with only vocab.json/merges.txt (SD 1.x's original folders) goes
through transformers' CLIPTokenizer (~0.8 s). Both give the same ids; a test holds them equal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from spacetime.errors import CheckpointError

# What a fast (tokenizer.json) folder holds; saving writes them back.
_FAST_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class Tokenizer:
    """Prompts → (b, max_length) ids: <start> words <end>, truncated and padded as CLIP's."""

    def __init__(
        self, backend, max_length: int, pad_token: str, files: dict[str, str] | None = None
    ):
        self.backend = backend
        self.model_max_length = max_length
        self.fast = not hasattr(backend, "save_pretrained")
        # The fast backend cannot write its folder back: keep the files' text, since the folder
        # read may be gone by save time (a single file's tokenizer is unpacked to a temp folder).
        self.files = files or {}
        if self.fast:
            backend.enable_truncation(max_length)
            backend.no_padding()
        self.pad_id = self.get_vocab()[pad_token]

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> Tokenizer:
        """Read a tokenizer folder; a damaged file raises CheckpointError naming it."""
        folder = Path(folder)
        try:
            return cls._from_folder(folder)
        except CheckpointError:
            raise
        except Exception as e:  # json, tokenizers and transformers each raise their own types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"damaged tokenizer in {folder}: {first}") from None

    @classmethod
    def _from_folder(cls, folder: Path) -> Tokenizer:
        files = {n: (folder / n).read_text() for n in _FAST_FILES if (folder / n).is_file()}
        config = json.loads(files.get("tokenizer_config.json", "{}"))
        if not isinstance(config, dict):
            raise CheckpointError(f"damaged tokenizer in {folder}: tokenizer_config.json")
        max_length = int(config.get("model_max_length", 77))
        max_length = 77 if max_length > 10_000 else max_length  # transformers' "unbounded" sentinel
        pad = config.get("pad_token", "<|endoftext|>")
        pad = pad["content"] if isinstance(pad, dict) else pad
        if "tokenizer.json" in files:
            from tokenizers import Tokenizer as RustTokenizer

            return cls(RustTokenizer.from_str(files["tokenizer.json"]), max_length, pad, files)
        from transformers import CLIPTokenizer

        return cls(CLIPTokenizer.from_pretrained(str(folder)), max_length, pad)

    @classmethod
    def wrap(cls, tokenizer) -> Tokenizer:
        """Wrap a transformers CLIPTokenizer built in memory."""
        return cls(tokenizer, tokenizer.model_max_length, tokenizer.pad_token)

    def __call__(self, prompts: list[str]) -> Tensor:
        if self.fast:
            rows = [e.ids for e in self.backend.encode_batch(list(prompts))]
        else:
            rows = self.backend(
                list(prompts), truncation=True, max_length=self.model_max_length
            ).input_ids
        ids = torch.full((len(rows), self.model_max_length), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab()

    def __len__(self) -> int:
        return len(self.get_vocab())

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not self.fast:
            self.backend.save_pretrained(str(folder))
            return
        for name, text in self.files.items():
            (folder / name).write_text(text)
