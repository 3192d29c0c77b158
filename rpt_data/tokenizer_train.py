"""Train a small Qwen-style byte-level BPE tokenizer for from-scratch experiments.

Small models trained from scratch want a small vocabulary, but RPT's byte-exact rewards and the chat
format assume Qwen3's tokenization rules. This trains a BPE with exactly those rules, mirroring the real
Qwen3 ``tokenizer.json``: NFC normalizer; Qwen's split regex (digits one by one, a word keeps its leading
space, a space before a digit stands alone) followed by a regex-free ByteLevel step; the full 256-byte
initial alphabet so any text encodes; ByteLevel post-processor and decoder. The chat tokens are appended
right after the BPE vocabulary in Qwen's order, with Qwen's flags (``<think>``/``</think>`` are added but
not "special", so decoding with ``skip_special_tokens`` keeps them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

from rpt_core.data.corpus import DEFAULT_TEMPLATE, ReadStats, iter_documents
from rpt_core.runtime.config import check, option, unescape
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.progress import Progress
from rpt_core.text.chat import THINK_CLOSE, THINK_OPEN
from rpt_core.text.tokenizer import Tokenizer

# Copied from the Qwen3 tokenizer.json pre_tokenizer (a regex is data, not template code).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# (content, special) in id order after the BPE vocabulary, as in Qwen3.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    (THINK_OPEN, False),
    (THINK_CLOSE, False),
)
MIN_VOCAB_SIZE = 256 + len(ADDED_TOKENS)


def qwen_style_tokenizer() -> tokenizers.Tokenizer:
    """An untrained BPE with Qwen3's normalizer, pre-tokenizer, post-processor and decoder."""
    tok = tokenizers.Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _with_qwen_field_values(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    """Set the fields the Python constructors leave at other (behaviour-neutral) defaults to Qwen3's values.

    ``decoders.ByteLevel`` takes no options and BPE serialises an unset subword prefix as null; Qwen3's
    file has ``add_prefix_space=false`` etc. and empty strings, so the trained file reads the same.
    """
    data = json.loads(tok.to_str())
    data["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": False,
    }
    data["model"]["continuing_subword_prefix"] = ""
    data["model"]["end_of_word_suffix"] = ""
    return tokenizers.Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2
) -> tokenizers.Tokenizer:
    """Train on ``texts``; ``vocab_size`` counts everything (256 bytes + merges + 5 added tokens).

    On a small corpus the BPE may stop early (no pair reaches ``min_frequency``), giving fewer tokens.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise RptError(
            f"vocab size {vocab_size} is too small: need at least {MIN_VOCAB_SIZE} (256 bytes + 5 added)"
        )
    if min_frequency < 1:
        raise RptError(f"min frequency must be >= 1, got {min_frequency}")
    tok = qwen_style_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(ADDED_TOKENS),
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=[],  # added afterwards so they follow the BPE ids, as in Qwen3
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for content, special in ADDED_TOKENS:
        token = AddedToken(
            content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special
        )
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    return _with_qwen_field_values(tok)


@dataclass
class TokenizerTrainConfig:
    corpus: list[str] = option(
        default_factory=list, help="Files, globs, dirs or a hub id.", argument=True, required=True
    )
    out: str = option("tokenizer", "Writes OUT/tokenizer.json.", required=True)
    vocab_size: int = option(
        2048, "Total tokens: 256 bytes + merges + the added chat tokens.", ge=MIN_VOCAB_SIZE
    )
    min_frequency: int = option(2, "Merges need at least this many occurrences.", ge=1)
    text_template: str = option(DEFAULT_TEMPLATE, "Document text from record fields.", callback=unescape)
    split: str = option("train", "Split, for a hub dataset id.")
    quiet: bool = option(False, "No progress display.")

    def __post_init__(self) -> None:
        check(self)


def train_from_corpus(cfg: TokenizerTrainConfig) -> str:
    """Train on the corpus' documents, write ``out/tokenizer.json`` atomically, return a summary line."""
    start = time.perf_counter()
    stats = ReadStats()
    chars = 0
    progress = Progress(None, unit="docs", desc="tokenizer train", quiet=cfg.quiet)

    def texts() -> Iterator[str]:
        nonlocal chars
        for doc in iter_documents(cfg.corpus, cfg.text_template, split=cfg.split, stats=stats):
            chars += len(doc.text)
            progress.update(1, chars=len(doc.text))
            yield doc.text

    with progress:
        raw = train_tokenizer(texts(), vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency)
    if stats.documents_yielded == 0:
        raise RptError(f"no usable documents in {', '.join(cfg.corpus)} ({stats.summary()})")
    tok = Tokenizer(raw, source="trained")
    file = tok.save(cfg.out)
    return (
        f"wrote {file}: vocab {tok.vocab_size} ({tok.base_vocab_size} BPE + "
        f"{tok.vocab_size - tok.base_vocab_size} added) from {stats.summary()}, {chars:,} chars, "
        f"fingerprint {tok.fingerprint[:12]}, {time.perf_counter() - start:.1f}s"
    )
