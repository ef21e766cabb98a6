"""Word-level instruction tokenizer."""

from __future__ import annotations

import pytest
import torch

from vla.tokenizer import WordTokenizer, build_vocab, split_words


def test_split_lowercases_and_drops_non_letters() -> None:
    assert split_words("Put the RED-cube, in bowl #2!") == ["put", "the", "red", "cube", "in", "bowl"]


def test_build_vocab_is_sorted_and_unique() -> None:
    assert build_vocab(["pick the red cube", "Pick the blue cube"]) == ["blue", "cube", "pick", "red", "the"]


def test_unknown_words_map_to_unk_and_never_crash() -> None:
    tok = WordTokenizer(["pick", "red", "cube"])
    ids = tok.encode("pick the purple cube")
    assert ids[0] == tok.bos_id
    assert ids[2] == ids[3] == tok.unk_id
    assert tok.decode(ids) == "pick <unk> <unk> cube"
    assert tok.encode("") == [tok.bos_id]


def test_encode_batch_pads_right_with_mask() -> None:
    tok = WordTokenizer(["a", "b", "c"])
    ids, mask = tok.encode_batch(["a b c", "b", ""])
    assert ids.shape == mask.shape == (3, 4)
    assert mask.tolist() == [[True] * 4, [True, True, False, False], [True, False, False, False]]
    assert (ids[~mask] == tok.pad_id).all()
    assert ids.dtype == torch.long


def test_truncation_warns_once_and_keeps_bos() -> None:
    tok = WordTokenizer(["a"])
    with pytest.warns(UserWarning, match="max_text_len"):
        ids, _ = tok.encode_batch(["a a a a a a"], max_len=3)
    assert ids.shape == (1, 4) and ids[0, 0] == tok.bos_id


def test_word_list_round_trip_and_normalisation() -> None:
    tok = WordTokenizer(["Red", "cube", "red"])
    assert tok.to_list() == ["red", "cube"]
    again = WordTokenizer.from_list(tok.to_list())
    assert again.encode("red cube") == tok.encode("RED Cube")
    assert len(again) == 5


def test_single_string_is_rejected() -> None:
    with pytest.raises(ValueError, match="list of instructions"):
        WordTokenizer(["a"]).encode_batch("a b")
