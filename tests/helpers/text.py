"""Hand-made tokenizers and a template for the tests.

``tiny_tokenizer``: the tiny task's byte-level BPE over ' ' and the letters a-h (and, with ``think``, the
added tokens <think> / </think> as in Qwen3); ``byte_tokenizer``: 256 byte tokens plus one merge, for the
evaluation tests where every expected number is countable; ``TextTemplate``: a template whose prediction is
the whole completion.
"""

from __future__ import annotations

from dataclasses import dataclass

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers

from rpt_core.text.tokenizer import Tokenizer, bytes_to_unicode

LETTERS = "abcdefgh"


def letters_bpe(letters: str = LETTERS) -> tokenizers.Tokenizer:
    """Byte-level BPE over ' ' and the letters: ids 0-8 for the characters, then one ' x' merge per letter
    in the order of ``letters`` (another order, another base vocabulary), then <|endoftext|>."""
    chars = ["Ġ", *LETTERS]
    merges = [("Ġ", c) for c in letters]
    vocab = {c: i for i, c in enumerate(chars)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok


def tiny_tokenizer(think: bool = False) -> Tokenizer:
    """Byte-level BPE over ' ' and a-h: tokens ' a'..' h' (and bare letters), plus <|endoftext|> (and with
    ``think`` the non-special added tokens <think> and </think>, as in Qwen3)."""
    tok = letters_bpe()
    if think:
        tok.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    return Tokenizer(tok)


def byte_tokenizer() -> Tokenizer:
    """256 single bytes (id = byte value), one merge "ab" (id 256) and <|endoftext|> (257)."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab["ab"] = 256
    raw = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return Tokenizer(raw)


@dataclass(frozen=True)
class TextTemplate:
    """An uncapped template whose prediction is the whole completion (like a chat template's answer)."""

    name: str = "text"
    thinks: bool = False
    max_new_tokens: int | None = None

    def render(self, context: str) -> str:
        return context

    def extract(self, completion_text: str) -> str | None:
        return completion_text

    def extract_ids(self, token_ids, decode_fn) -> str | None:
        return decode_fn(list(token_ids))

    def stop_after(self, token_to_id):
        return None
