"""The tests' models: one ``tiny_model`` builder (every small random Qwen3 in the suite is one of its
shapes), the tiny task's saved model directory, and two hand-made or briefly trained models.

``bigram_model``: a Qwen3 whose greedy next token is a known function of the last input token (the
evaluation tests count every expected number); ``think_copy_model``: a model that writes a one-letter
thought and copies it after ``</think>`` (RLP's tests).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.text.tokenizer import Tokenizer
from tests.helpers.text import LETTERS


def tiny_model(
    vocab: int | Tokenizer = 64,
    seed: int | None = 0,
    *,
    layers: int = 2,
    hidden: int = 32,
    intermediate: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 8,
    tie: bool = True,
    positions: int = 40960,
    std: float | None = None,
    eval: bool = False,
    **config,
) -> Qwen3ForCausalLM:
    """A small random float32 Qwen3 (the "tiny" preset's rope theta, no EOS id) of the given shape.

    ``vocab``: a size or a tokenizer (its ``vocab_size``); ``seed``: torch's seed before the weights are
    drawn (None: leave the global generator as it is); ``positions``: ``max_position_embeddings`` (the
    default is ``Qwen3Config``'s, the "tiny" preset has 2048); ``std``: re-draw the weights with
    ``init_weights(std)``; ``eval``: return it in eval mode; ``config``: any ``Qwen3Config`` field (it
    wins over the shape's).
    """
    if seed is not None:
        torch.manual_seed(seed)
    shape = dict(
        vocab_size=vocab if isinstance(vocab, int) else vocab.vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        tie_word_embeddings=tie,
        max_position_embeddings=positions,
    )
    cfg = Qwen3Config.preset("tiny", **{**shape, **config})
    model = Qwen3ForCausalLM(cfg).float()
    if std is not None:
        model.init_weights(std=std)
    return model.eval() if eval else model


def save_model_dir(path: Path, tok: Tokenizer, seed: int = 0, model: Qwen3ForCausalLM | None = None) -> Path:
    (model or tiny_model(tok, seed=seed)).save_pretrained(path)
    tok.save(path)
    return path


def think_copy_model(tok: Tokenizer, steps: int = 200, seed: int = 0) -> Qwen3ForCausalLM:
    """A one-layer model pretrained on ``context<think> z</think> z`` (z a random letter): it writes a
    one-letter thought and copies it after ``</think>`` (p ~ 0.9 after 200 steps, ~3 s on one thread).

    It has learned to write a one-letter thought and to copy it after ``</think>``, but not which letter
    helps, which is what RLP's information gain then teaches. One layer with untied embeddings learns the
    copy several times faster than ``tiny_model``'s default shape.
    """
    model = tiny_model(tok, seed=seed, layers=1, tie=False)
    rng = random.Random(seed)
    think, end = tok.token_to_id("<think>"), tok.token_to_id("</think>")
    letter = [tok.token_to_id("Ġ" + c) for c in LETTERS]  # ' a'..' h'
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        n = rng.randint(2, 6)  # one context length per batch: no padding needed
        rows = []
        for _ in range(16):
            z = rng.choice(letter)
            rows.append([rng.choice(letter) for _ in range(n)] + [think, z, end, z])
        ids = torch.tensor(rows)  # (16, n + 4)
        logits = model(ids[:, :-1])  # (16, n + 3, V): trained from <think> on (the context is noise)
        loss = F.cross_entropy(logits[:, n - 1 :].reshape(-1, logits.shape[-1]), ids[:, n:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def bigram_model(tok: Tokenizer, mapping: dict[str, str], extra_vocab: int = 0) -> Qwen3ForCausalLM:
    """A Qwen3 whose greedy next token depends only on the last input token: ``mapping[last] -> next``.

    Attention and MLP outputs are zeroed, so the final hidden state is RMSNorm(embedding of the last token);
    each mapped source token embeds as its own basis vector and the LM head row of its target points along
    it with logit 10 * sqrt(hidden) against 0 for every other token. Every other token's embedding is zero
    along those basis vectors, so after an unmapped token all logits are 0 and argmax is token id 0.
    """
    model = tiny_model(
        tok.vocab_size + extra_vocab,
        layers=1,
        heads=2,
        kv_heads=1,
        head_dim=16,
        tie=False,
        positions=512,
        rope_theta=1_000_000.0,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    hidden = model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.model.embed_tokens.weight[:, : len(mapping)] = 0.0  # unmapped tokens: all logits 0
        for k, (src, dst) in enumerate(mapping.items()):
            (i,) = tok.encode(src)
            j = int(dst) if dst.isdigit() else tok.encode(dst)[0]
            basis = torch.zeros(hidden)
            basis[k] = 1.0
            model.model.embed_tokens.weight[i] = basis
            model.lm_head.weight[j] += 10.0 * basis
    return model.eval()
