"""Hand-made tokenizer, model and shard rows for the evaluation tests: every expected number is countable.

``tiny_tokenizer``: 256 byte tokens plus one merge; ``bigram_model``: a Qwen3 whose greedy next token is a
known function of the last input token; ``shard_row``: a shard row from ground-truth token texts.
"""

from __future__ import annotations

from itertools import accumulate

import tokenizers
import torch
from tokenizers import AddedToken, decoders, models, pre_tokenizers

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.text.tokenizer import Tokenizer, bytes_to_unicode


def tiny_tokenizer() -> Tokenizer:
    """256 single bytes (id = byte value), one merge "ab" (id 256) and <|endoftext|> (257)."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab["ab"] = 256
    raw = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return Tokenizer(raw)


def bigram_model(tok: Tokenizer, mapping: dict[str, str], extra_vocab: int = 0) -> Qwen3ForCausalLM:
    """A Qwen3 whose greedy next token depends only on the last input token: ``mapping[last] -> next``.

    Attention and MLP outputs are zeroed, so the final hidden state is RMSNorm(embedding of the last token);
    each mapped source token embeds as its own basis vector and the LM head row of its target points along
    it with logit 10 * sqrt(hidden) against 0 for every other token. Every other token's embedding is zero
    along those basis vectors, so after an unmapped token all logits are 0 and argmax is token id 0.
    """
    cfg = Qwen3Config(
        vocab_size=tok.vocab_size + extra_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        tie_word_embeddings=False, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, torch_dtype="float32",
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.model.embed_tokens.weight[:, : len(mapping)] = 0.0  # unmapped tokens: all logits 0
        for k, (src, dst) in enumerate(mapping.items()):
            (i,) = tok.encode(src)
            j = int(dst) if dst.isdigit() else tok.encode(dst)[0]
            basis = torch.zeros(cfg.hidden_size)
            basis[k] = 1.0
            model.model.embed_tokens.weight[i] = basis
            model.lm_head.weight[j] += 10.0 * basis
    return model.eval()


def shard_row(doc: str, context: str, pieces: list[str], entropy: float, position: int = 0) -> dict:
    """One shard row whose label is the given ground-truth token texts (each one ``tiny_tokenizer`` token)."""
    ids = [_TOK.encode(p)[0] for p in pieces]
    return {
        "doc_id": doc, "position": position, "context": context, "label": "".join(pieces).encode(),
        "boundaries": list(accumulate(len(p.encode()) for p in pieces)), "entropy": entropy,
        "n_context_tokens": position, "token_id": ids[0], "label_token_ids": ids,
    }  # fmt: skip


_TOK = tiny_tokenizer()
