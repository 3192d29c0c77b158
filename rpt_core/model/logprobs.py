"""Per-token log-probabilities of sampled completions under a policy, without the (B, T, V) logits tensor.

GRPO needs log pi(token | prefix) at temperature tau for every completion token, with gradients. With a
151k vocabulary, B = 64 sequences and T = 1024 tokens the float32 logits alone would be 40 GB, so the LM
head runs only on real (non-padding) completion tokens, a chunk of them at a time, inside one autograd
function (``ChunkedTokenLogprob``) that keeps just each token's log-sum-exp for backward and rebuilds
the chunk's logits there.

The numbers reproduce ``rpt_core.model.generation``'s ``log_softmax(lm_head(h) / temperature)[token]`` to
float rounding (here 1/temperature scales h before the LM head, a (C, H) instead of a (C, V) multiply), with
the same left-padding convention (positions count only real tokens).

``LogprobModule`` wraps a causal LM so DDP / FSDP see these log-probs as the module's ``forward`` (their
gradient and unshard hooks hang off ``forward``); ``rpt_train.rl.update`` runs it over rollout batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rpt_core.runtime.errors import RptError

DEFAULT_CHUNK = 1024  # tokens: a (1024, 151936) float32 logits chunk is 0.6 GB


class ChunkedTokenLogprob(torch.autograd.Function):
    """log_softmax(h W^T / T)[target] and the entropy, chunk by chunk, with a hand-written backward.

    Like a fused linear cross-entropy: forward keeps only each row's log-sum-exp, backward rebuilds one
    (C, V) chunk of logits at a time and turns it into the gradient in place (softmax, scale, scatter),
    so no (N, V) tensor ever exists and each chunk costs a handful of passes over C x V memory. When all
    N tokens fit in one chunk the softmax is kept instead, which saves the recomputing matmul.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, hidden, weight, targets, inv_temp: float, chunk: int):
        # hidden (N, H), weight (V, H), targets (N,) -> logp (N,), entropy (N,)
        N = hidden.shape[0]
        out = torch.empty(3, N, dtype=torch.float32, device=hidden.device)  # logp, entropy, lse
        probs = None
        for s in range(0, N, chunk):
            t = targets[s : s + chunk, None]  # (C, 1)
            z = F.linear(hidden[s : s + chunk] * inv_temp, weight).float()  # (C, V)
            zmax = z.amax(-1, keepdim=True)  # (C, 1)
            z.sub_(zmax)
            e = torch.exp(z)  # (C, V)
            total = e.sum(-1)  # (C,)
            log_total = total.log()
            out[0, s : s + chunk] = z.gather(-1, t)[:, 0] - log_total
            # H = log S - sum(e * z) / S, the row dot as a batched matmul (no (C, V) temporary), kept in
            # float32: autocast would run it in bfloat16, off by ~0.4% in the logged entropy.
            with torch.autocast(hidden.device.type, enabled=False):
                dot = (e.unsqueeze(1) @ z.unsqueeze(-1)).view(-1)  # (C,)
            out[1, s : s + chunk] = log_total - dot / total
            out[2, s : s + chunk] = zmax[:, 0] + log_total
            if N <= chunk:  # one chunk: keeping its softmax costs no more memory and saves a matmul
                probs = e.div_(total[:, None])
        ctx.save_for_backward(hidden, weight, targets, out[2], probs)
        ctx.inv_temp, ctx.chunk = inv_temp, chunk
        entropy = out[1].clone()
        ctx.mark_non_differentiable(entropy)
        return out[0].clone(), entropy

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g_logp, g_entropy):
        hidden, weight, targets, lse, probs = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[:2]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = None  # (V, H) float32, written by the first chunk and accumulated by the others
        g_logp = g_logp.float()
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s : s + ctx.chunk] * ctx.inv_temp  # (C, H)
            g = g_logp[s : s + ctx.chunk, None]  # (C, 1)
            if probs is not None:
                z = probs.mul_(-g)  # in place: a second backward through this graph is not supported
            else:
                z = F.linear(h, weight).float()  # (C, V)
                z.sub_(lse[s : s + ctx.chunk, None]).exp_().mul_(-g)  # -g * softmax
            z.scatter_add_(-1, targets[s : s + ctx.chunk, None], g)  # + g at the target: d logp / dz * g
            dz = z.to(h.dtype)
            if need_h:
                grad_h[s : s + ctx.chunk] = (dz @ weight.to(h.dtype)) * ctx.inv_temp
            if need_w:
                # float32 accumulator. Under autocast the chunk's product comes back in bfloat16 (like any
                # autocast matmul's gradient) and is added in float32: an in-place addmm_ is not autocast
                # and would mix dtypes.
                a, b = dz.t().float(), h.float()
                if grad_w is None:
                    grad_w = torch.mm(a, b).float()
                elif torch.is_autocast_enabled(h.device.type):
                    grad_w.add_(torch.mm(a, b))
                else:
                    grad_w.addmm_(a, b)
        return grad_h, grad_w.to(weight.dtype) if need_w else None, None, None, None


def logprobs_from_hidden(
    hidden: torch.Tensor,  # (..., H): hidden state at the position *before* each target
    lm_head_weight: torch.Tensor,  # (V, H)
    targets: torch.Tensor,  # (...) long
    temperature: float = 1.0,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, entropy), float32 of the shape of ``targets``, computed ``chunk`` tokens at a time.

    logp = log_softmax(hidden @ W^T / temperature)[target] is differentiable (wrt hidden and W); the
    entropy of the same distribution is a detached metric.
    """
    if not temperature > 0:  # T = 0 is greedy decoding: a point mass, with no log-probs to differentiate
        raise RptError(f"log-probs need a temperature > 0 (0 means greedy decoding), got {temperature}")
    shape = targets.shape
    flat_h = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    flat_t = targets.reshape(-1)  # (N,)
    logp, entropy = ChunkedTokenLogprob.apply(
        flat_h, lm_head_weight, flat_t, 1.0 / temperature, max(1, chunk)
    )
    return logp.view(shape), entropy.view(shape)


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,  # (B, P + T): left-padded prompt, then the completion (right-padded)
    attention_mask: torch.Tensor,  # (B, P + T): 1 on real tokens
    completion_start: int,  # P: index of the first completion column
    temperature: float = 1.0,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(completion token | everything before it) at ``temperature``, and the policy entropy there.

    ``model`` is a causal LM with ``hidden_states(ids, attention_mask)`` and ``lm_head`` (our Qwen3).
    Returns (logp, entropy), each (B, T) float32 for the T = ``input_ids.shape[1] - completion_start``
    completion columns, 0 on padding columns (the LM head only runs on real completion tokens).
    """
    P = completion_start
    if P < 1:
        raise ValueError("completion_start must be >= 1 (the first completion token needs a prefix)")
    # The last column's hidden state predicts nothing we need: leave it out of the forward.
    hidden = model.hidden_states(input_ids[:, :-1], attention_mask[:, :-1])  # (B, P + T - 1, H)
    hidden = hidden[:, P - 1 :]  # (B, T, H): position P-1+j predicts completion token j
    real = attention_mask[:, P:].bool()  # (B, T)
    lp, ent = logprobs_from_hidden(
        hidden[real], model.lm_head.weight, input_ids[:, P:][real], temperature, chunk
    )
    zeros = torch.zeros(real.shape, dtype=torch.float32, device=real.device)  # (B, T)
    return zeros.masked_scatter(real, lp), zeros.masked_scatter(real, ent)


class LogprobModule(nn.Module):
    """``forward(input_ids, attention_mask, completion_start, temperature)`` -> (logp, entropy) (B, T).

    Exists so that DDP / FSDP2, which act on ``forward``, wrap the computation the trainer differentiates.
    """

    def __init__(self, model: nn.Module, chunk: int = DEFAULT_CHUNK):
        super().__init__()
        self.model = model
        self.chunk = chunk

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_start: int,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return token_logprobs(
            self.model, input_ids, attention_mask, completion_start, temperature, self.chunk
        )
