"""The tokenizer half of a GGUF file: a byte-level BPE ``tokenizers.Tokenizer`` and the
``tokenizer_config.json`` dict, built from the vocabulary, merges, token types and special token ids that
llama.cpp stores as metadata (``tokenizer.ggml.*``, ``tokenizer.chat_template``).

Ids are the file's: every token sits in the BPE vocabulary at its position in ``tokenizer.ggml.tokens``.
Tokens typed CONTROL (``<|im_end|>``) become special added tokens and USER_DEFINED ones (``<think>``)
plain added tokens, both matched whole in text and spelled literally, as in the model's own
``tokenizer.json``. A GGUF names its pre-tokenizer (``tokenizer.ggml.pre``) instead of spelling it out;
``PRE_TOKENIZERS`` maps each supported name to the rules of that family's own ``tokenizer.json`` (the
regex split, SmolLM's one-digit pre-tokens, Qwen's NFC normalizer, Llama-3's whole-word lookup). An
unknown name is refused rather than guessed, since a wrong split changes every token boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors

from rpt_core.model.gguf import GgufFile
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import bytes_to_unicode

CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types (tokenizer.ggml.token_type)

# The split regexes of the families' own tokenizer.json files.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class PreTokenizerRule:
    """How one ``tokenizer.ggml.pre`` family cuts text before BPE."""

    split: str | None = None  # a regex of isolated pre-tokens; None: GPT-2's built-in byte-level regex
    digits: bool = False  # every digit its own pre-token first (SmolLM, StarCoder)
    nfc: bool = False  # NFC-normalise the text first (Qwen)
    ignore_merges: bool = False  # a pre-token that is a vocabulary entry is one token (Llama-3)

    def pre_tokenizer(self) -> pre_tokenizers.PreTokenizer:
        if self.split is None:
            steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        else:
            steps = [
                pre_tokenizers.Split(Regex(self.split), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        if self.digits:
            steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
        return pre_tokenizers.Sequence(steps)


PRE_TOKENIZERS = {
    "gpt2": PreTokenizerRule(),
    "smollm": PreTokenizerRule(digits=True),
    "starcoder": PreTokenizerRule(digits=True),
    "qwen2": PreTokenizerRule(split=QWEN2_SPLIT, nfc=True),
    "deepseek-r1-qwen": PreTokenizerRule(split=QWEN2_SPLIT, nfc=True),
    "llama-bpe": PreTokenizerRule(split=LLAMA3_SPLIT, ignore_merges=True),
    "llama3": PreTokenizerRule(split=LLAMA3_SPLIT, ignore_merges=True),
}


def _byte_level_spelling(tokens: list[str]) -> list[str]:
    """Tokens as the BPE vocabulary spells them: byte-level already, or re-spelled from their UTF-8."""
    alphabet = set(bytes_to_unicode().values())
    spelling = bytes_to_unicode()
    return [t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")) for t in tokens]


def tokenizer_from_gguf(f: GgufFile) -> tokenizers.Tokenizer:
    """The byte-level BPE tokenizer described by ``f``'s ``tokenizer.ggml.*`` metadata."""
    kind, pre = f.get("tokenizer.ggml.model"), f.get("tokenizer.ggml.pre", "gpt2")
    if kind != "gpt2":
        raise RptError(f"{f.path}: GGUF tokenizer '{kind}' is not supported (only byte-level BPE, 'gpt2')")
    if pre not in PRE_TOKENIZERS:
        raise RptError(
            f"{f.path}: GGUF pre-tokenizer '{pre}' is not supported (supported: {', '.join(PRE_TOKENIZERS)})"
        )
    rule = PRE_TOKENIZERS[pre]
    tokens = list(f.get("tokenizer.ggml.tokens") or [])
    merges = f.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise RptError(f"{f.path}: GGUF file has no tokenizer vocabulary and merges")
    types = list(f.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    added = {
        i: t for i, (t, kind) in enumerate(zip(tokens, types, strict=True)) if kind in (CONTROL, USER_DEFINED)
    }
    spelled = _byte_level_spelling(tokens)
    # Added tokens keep their literal text in the vocabulary so tokenizers gives them their file id.
    vocab = {(added[i] if i in added else t): i for i, t in enumerate(spelled)}
    if len(vocab) != len(tokens):
        raise RptError(f"{f.path}: GGUF vocabulary has duplicate tokens")
    model = tokenizers.models.BPE(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        ignore_merges=rule.ignore_merges,
    )
    tok = tokenizers.Tokenizer(model)
    tok.normalizer = normalizers.NFC() if rule.nfc else None
    tok.pre_tokenizer = rule.pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for i, t in added.items() if types[i] == CONTROL]
    )
    tok.add_tokens(
        [AddedToken(t, normalized=False, special=False) for i, t in added.items() if types[i] != CONTROL]
    )
    tok.post_processor = _post_processor(f, tokens)
    return tok


def _post_processor(f: GgufFile, tokens: list[str]) -> processors.PostProcessor:
    """BOS / EOS around each sequence when the file asks for them (``add_bos_token``), else nothing."""
    bos = _special(f, tokens, "bos") if f.get("tokenizer.ggml.add_bos_token", False) else None
    eos = _special(f, tokens, "eos") if f.get("tokenizer.ggml.add_eos_token", False) else None
    if bos is None and eos is None:
        return processors.ByteLevel(trim_offsets=False)
    single = " ".join(x for x in (bos, "$A", eos) if x)
    pair = single + " " + " ".join(f"{x}:1" for x in (bos, "$B", eos) if x)
    specials = [(t, tokens.index(t)) for t in dict.fromkeys((bos, eos)) if t is not None]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def _special(f: GgufFile, tokens: list[str], name: str) -> str | None:
    i = f.get(f"tokenizer.ggml.{name}_token_id")
    return tokens[i] if i is not None and 0 <= i < len(tokens) else None


def tokenizer_config_from_gguf(f: GgufFile) -> dict[str, Any]:
    """``tokenizer_config.json``: the special tokens, BOS/EOS flags and the chat template (its string)."""
    tokens = list(f.get("tokenizer.ggml.tokens") or [])
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(f.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(f.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
    }
    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        config[f"{name}_token"] = _special(f, tokens, key)
    context = f.get(f"{f.architecture}.context_length")
    if context is not None:
        config["model_max_length"] = int(context)
    template = f.get("tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = template
    return config
