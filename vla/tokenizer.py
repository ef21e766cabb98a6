"""Word-level tokenizer for the from-scratch backbone, built from the instruction vocabulary.

Instructions are short templated sentences ("put the red cube in the bowl"), so whole words are the
natural unit: a dataset's vocabulary is a few dozen words and a new word at evaluation time maps to
``<unk>`` instead of failing. The tokenizer is fully described by its word list, which checkpoints store.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence

import torch

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIALS = (PAD, UNK, BOS)
_WORD = re.compile(r"[a-z]+")


def split_words(text: str) -> list[str]:
    """Lowercase and split on anything that is not a letter ("Red-cube, 2x" -> ["red", "cube", "x"])."""
    return _WORD.findall(text.lower())


def build_vocab(instructions: Iterable[str]) -> list[str]:
    """Sorted unique words of a collection of instructions (deterministic across runs)."""
    return sorted({w for text in instructions for w in split_words(text)})


class WordTokenizer:
    pad_id, unk_id, bos_id = 0, 1, 2

    def __init__(self, vocab: Sequence[str]) -> None:
        words: list[str] = []
        for word in vocab:
            if not isinstance(word, str):
                raise ValueError(f"vocab entries must be strings, got {word!r}")
            # Normalise the same way as instructions so that "Red" in a vocab list still matches.
            for w in split_words(word):
                if w not in words:
                    words.append(w)
        self.words = words
        self._ids = {w: i + len(SPECIALS) for i, w in enumerate(words)}
        self._warned_truncation = False

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.words)

    def to_list(self) -> list[str]:
        return list(self.words)

    @classmethod
    def from_list(cls, words: Sequence[str]) -> WordTokenizer:
        return cls(words)

    def encode(self, text: str) -> list[int]:
        """<bos> followed by word ids; unknown words map to <unk>."""
        return [self.bos_id] + [self._ids.get(w, self.unk_id) for w in split_words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        names = list(SPECIALS) + self.words
        return " ".join(names[i] for i in ids if i not in (self.pad_id, self.bos_id))

    def encode_batch(self, texts: Sequence[str], max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids (B, L) and a bool mask (B, L), True on real tokens; L = longest (<= max_len + 1)."""
        if isinstance(texts, str):
            raise ValueError("encode_batch expects a list of instructions (batch['task']), got a single string")
        seqs = [self.encode(t) for t in texts]
        if max_len is not None and any(len(s) > max_len + 1 for s in seqs):
            if not self._warned_truncation:
                warnings.warn(
                    f"instruction(s) longer than max_text_len={max_len} words are truncated; "
                    "raise model.max_text_len to keep them whole",
                    stacklevel=2,
                )
                self._warned_truncation = True
            seqs = [s[: max_len + 1] for s in seqs]
        length = max(len(s) for s in seqs) if seqs else 1
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return ids, ids != self.pad_id
