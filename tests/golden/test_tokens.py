"""Tests for golden.tokens: the character-level token inventory."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from golden.tokens import BLANK, BLANK_ID, Tokenizer, default_tokens

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"


def test_default_inventory_layout():
    toks = default_tokens()
    assert len(toks) == 29
    assert toks[0] == BLANK == "<b>"
    assert toks[1] == " "
    assert "".join(toks[2:28]) == "abcdefghijklmnopqrstuvwxyz"
    assert toks[28] == "'"


def test_default_tokens_returns_fresh_list():
    a = default_tokens()
    a.append("x")
    assert len(default_tokens()) == 29


def test_encode_lowercases_and_decode_inverts():
    tok = Tokenizer(default_tokens())
    ids = tok.encode("Don't STOP")
    assert ids == [5, 16, 15, 28, 21, 1, 20, 21, 16, 17]
    assert tok.decode(ids) == "don't stop"


def test_encode_unknown_character_names_it():
    tok = Tokenizer(default_tokens())
    with pytest.raises(ValueError, match=r"'7'.*position 3"):
        tok.encode("abc7")
    with pytest.raises(ValueError, match="'é'"):
        tok.encode("café")


def test_decode_skips_blank_and_rejects_out_of_range():
    tok = Tokenizer(default_tokens())
    assert tok.decode([0, 2, 0, 0, 3, 0]) == "ab"
    with pytest.raises(ValueError, match="29 out of range"):
        tok.decode([29])
    with pytest.raises(ValueError, match="-1 out of range"):
        tok.decode([-1])


def test_blank_len_and_to_list_copy():
    tok = Tokenizer(default_tokens())
    assert tok.blank == BLANK_ID == 0
    assert len(tok) == 29
    lst = tok.to_list()
    lst[1] = "?"
    assert tok.to_list()[1] == " "


@pytest.mark.parametrize("tokens, message", [
    ([], "blank"),
    (["a", "<b>"], "blank"),
    (["<b>", "ab"], "single character"),
    (["<b>", "A"], "lowercase"),
    (["<b>", "a", "b", "a"], "twice"),
])
def test_invalid_inventories(tokens, message):
    with pytest.raises(ValueError, match=message):
        Tokenizer(tokens)


def test_custom_inventory():
    tok = Tokenizer(["<b>", "x", "y"])
    assert tok.encode("YX") == [2, 1]
    assert len(tok) == 3


@given(st.text(alphabet=ALPHABET + ALPHABET.upper().strip()))
def test_round_trip_is_lowercase_identity(text):
    tok = Tokenizer(default_tokens())
    ids = tok.encode(text)
    assert all(1 <= i < 29 for i in ids)
    assert tok.decode(ids) == text.lower()
