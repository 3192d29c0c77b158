"""Saved activations per token and decoder layer of a Qwen3-0.6B-shaped model in the trainer's setting
(float32 weights, bfloat16 autocast, a padded batch), with and without gradient checkpointing: the figures
``benchmarks/GPU.md`` sizes the real recipe's update with (not a test).

Counts the bytes of every tensor autograd saves for backward (``saved_tensors_hooks``, one count per
storage) for two sequence lengths and differences them, so the weights' bfloat16 copies cancel.

    PYTHONPATH=. python benchmarks/activation_memory.py      # CPU is enough: ~20 s
"""

from __future__ import annotations

import torch

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM

ROWS, LAYERS = 2, 2


def saved_bytes(model: Qwen3ForCausalLM, T: int) -> int:
    ids = torch.randint(0, model.config.vocab_size, (ROWS, T))  # (B, T)
    mask = torch.ones(ROWS, T, dtype=torch.long)  # (B, T): one row left-padded, as rollouts are
    mask[1, :10] = 0
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16):
        model.hidden_states(ids, mask)
    return sum(seen.values())


def main() -> None:
    torch.manual_seed(0)
    cfg = Qwen3Config.preset(
        "qwen3-0.6b", vocab_size=1024, num_hidden_layers=LAYERS
    )  # the LM head is chunked
    model = Qwen3ForCausalLM(cfg).train()
    for checkpointing in (False, True):
        model.gradient_checkpointing = checkpointing
        a, b = saved_bytes(model, 256), saved_bytes(model, 512)
        per = (b - a) / (ROWS * 256 * LAYERS)
        print(
            f"gradient checkpointing {'on' if checkpointing else 'off'}: {per / 1e3:.1f} KB per token, layer"
        )


if __name__ == "__main__":
    main()
