"""CLIP tokenization behind one small interface, fast to import.

A folder with tokenizer.json (what transformers 5 saves) is read by the Rust `tokenizers` library
directly (~10 ms to import); one with only vocab.json/merges.txt (SD 1.x's original folders) goes
through transformers' CLIPTokenizer (~0.8 s). Both give the same ids; a test holds them equal.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor


class Tokenizer:
    """Prompts → (b, max_length) ids: <start> words <end>, truncated and padded as CLIP's."""

    def __init__(self, backend, max_length: int, pad_token: str, folder: Path | None = None):
        self.backend = backend
        self.model_max_length = max_length
        self.fast = not hasattr(backend, "save_pretrained")
        self.folder = folder
        if self.fast:
            backend.enable_truncation(max_length)
            backend.no_padding()
        self.pad_id = self.get_vocab()[pad_token]

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> Tokenizer:
        folder = Path(folder)
        config = {}
        if (folder / "tokenizer_config.json").is_file():
            config = json.loads((folder / "tokenizer_config.json").read_text())
        max_length = int(config.get("model_max_length", 77))
        max_length = 77 if max_length > 10_000 else max_length  # transformers' "unbounded" sentinel
        pad = config.get("pad_token", "<|endoftext|>")
        pad = pad["content"] if isinstance(pad, dict) else pad
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as RustTokenizer

            return cls(
                RustTokenizer.from_file(str(folder / "tokenizer.json")), max_length, pad, folder
            )
        from transformers import CLIPTokenizer

        return cls(CLIPTokenizer.from_pretrained(str(folder)), max_length, pad, folder)

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
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if self.folder is not None and (self.folder / name).is_file():
                shutil.copy(self.folder / name, folder / name)
