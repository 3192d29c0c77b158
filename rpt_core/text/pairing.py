"""Does a tokenizer belong to a model? One check, run where a model and a tokenizer meet: ``rpt-data build``
(the proxy), ``rpt-train run`` (the policy), ``rpt-train eval`` (every evaluated model) and ``rpt-train
passrate``, before weights are loaded: ``check_model`` is that check and the ``--top-k`` bound,
``load_checked`` the same followed by the load.

A wrong pair does not crash: it trains or scores garbage. So each of these stops with one line:

* the tokenizer has more tokens than the model has embedding rows (ids past the table);
* the model directory ships its own ``tokenizer.json`` and the given one has another base vocabulary;
* ``config.json``'s ``bos_token_id`` / ``eos_token_id`` are not added tokens of the tokenizer (outside it,
  or an ordinary piece of text there): the tokenizer comes from another model family. (A Qwen model's
  end-of-turn id 151645 is past a 49k-token SmolLM2 vocabulary; Llama 3's 128001 is ordinary text to Qwen.)
"""

from __future__ import annotations

from pathlib import Path

import torch

from rpt_core.model.config import Qwen3Config
from rpt_core.model.hf_io import read_config
from rpt_core.model.qwen3 import Qwen3ForCausalLM
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import TOKENIZER_FILE, Tokenizer


def own_tokenizer(model_dir: str | Path, tokenizer: Tokenizer) -> Tokenizer | None:
    """The model directory's own ``tokenizer.json`` when it differs from ``tokenizer``'s file, else None."""
    own = Path(model_dir) / TOKENIZER_FILE
    if not own.is_file():
        return None
    given = Path(tokenizer.source)
    if given.is_file() and (given.resolve() == own.resolve() or given.read_bytes() == own.read_bytes()):
        return None
    return Tokenizer.load(own)


def _declared_ids(config: Qwen3Config) -> list[tuple[str, int]]:
    out = []
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(config, name)
        for i in value if isinstance(value, list) else [value]:
            if i is not None:
                out.append((name, int(i)))
    return out


def check_pair(tokenizer: Tokenizer, config: Qwen3Config, model: str, own: Tokenizer | None = None) -> None:
    """RptError (one line) unless ``tokenizer`` belongs to the model ``model`` with ``config``.

    ``own``: the model directory's own tokenizer when the caller was given another one (``own_tokenizer``).
    """
    src = tokenizer.source
    if tokenizer.vocab_size > config.vocab_size:
        raise RptError(
            f"tokenizer {src} has {tokenizer.vocab_size} tokens but {model} embeds only {config.vocab_size}: "
            "they do not belong together"
        )
    if own is not None and own.base_vocab_fingerprint != tokenizer.base_vocab_fingerprint:
        raise RptError(
            f"tokenizer {src} has a different base vocabulary from {model}'s own {own.source}: "
            "they do not belong together"
        )
    for name, i in _declared_ids(config):
        if i >= tokenizer.vocab_size:
            raise RptError(
                f"{model} declares {name} {i} but tokenizer {src} has only {tokenizer.vocab_size} tokens: "
                "they come from different model families"
            )
        if i not in tokenizer.added_ids:
            text = tokenizer.decode([i])
            raise RptError(
                f"{model} declares {name} {i}, which tokenizer {src} reads as the ordinary text {text!r}: "
                "they come from different model families"
            )


def check_model(
    model_dir: str | Path, tokenizer: Tokenizer, what: str, top_k: int | None = None, role: str = "model"
) -> Qwen3Config:
    """The config of the model in ``model_dir`` once ``tokenizer`` is known to belong to it (``check_pair``,
    against the directory's own ``tokenizer.json`` too when ``tokenizer`` is another file) and ``top_k``
    (the entropy's or rollout's, when given) fits its vocabulary. ``what`` names the model in errors;
    ``role`` says whose vocabulary ``--top-k`` is checked against (``the proxy's vocabulary``)."""
    config = read_config(Path(model_dir))
    check_pair(tokenizer, config, what, own_tokenizer(model_dir, tokenizer))
    if top_k is not None and top_k > config.vocab_size:
        raise RptError(f"--top-k {top_k} is larger than the {role}'s vocabulary ({config.vocab_size} tokens)")
    return config


def load_checked(
    model_dir: Path,
    tokenizer: Tokenizer,
    what: str,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    top_k: int | None = None,
    role: str = "model",
) -> Qwen3ForCausalLM:
    """The model in ``model_dir``, loaded once ``check_model`` accepted ``tokenizer`` (and ``top_k``)."""
    check_model(model_dir, tokenizer, what, top_k, role)
    return Qwen3ForCausalLM.from_pretrained(model_dir, dtype=dtype, device=device)
