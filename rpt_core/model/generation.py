"""Batched sampling for GRPO rollouts: one left-padded prefill, a KV cache shared by G samples, and fast
temperature / top-k / top-p / greedy sampling that also returns each sampled token's log-prob.

The returned log-probs are those of the temperature-scaled distribution, log_softmax(logits / T), whatever
top-k / top-p did: filtering only restricts which tokens can be drawn, so the trainer's recomputation from a
plain forward pass reproduces them (greedy, also spelled temperature 0, uses T = 1).

Speed notes (CPU first, nothing CPU-only):

* The prefill runs the LM head on each prompt's last position only (left padding puts it at column -1).
* ``torch.multinomial`` draws one exponential random number per vocabulary entry (it *is* the exponential
  race internally), and that RNG dominates a 151,936-way draw. ``race_sample`` keeps the race, so sampling
  stays exact and seeded by a ``torch.Generator``, but runs it in two levels (first a block of the
  vocabulary, then a token inside it), which draws ~V/128 + 128 random numbers per row instead of V.
* Full-vocabulary math is in place: on the fresh float32 logits themselves, or (bf16 models) on one float32
  scratch buffer reused every step; softmax math is always float32, one fused row-wise kernel.
* Rows that finished leave the batch (``rpt_core.model.decode``: the KV cache is compacted in place), so
  the work of a step follows the rows still generating; the host looks at the stop state only every few
  steps on CUDA; and the decode step has fixed shapes, so it can run compiled and from CUDA graphs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rpt_core.model.decode import CUDA_CHECK_EVERY, DecodeOptions, Decoder, lm_head_rows
from rpt_core.runtime.errors import RptError

RACE_BLOCK = 128  # vocabulary block of the two-level race; 151,936 = 128 * 1187, so no padding is needed
NUCLEUS_FIRST_K = 64  # top-p without top-k: candidates start at the top 64 logits and grow 8x as needed


@dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy (as in vLLM and transformers)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    greedy: bool = False
    stop_token_ids: tuple[int, ...] = ()
    # (trigger id, n): a row also stops n tokens after it first emits the trigger (a think template's
    # ``</think>`` followed by its answer tokens), instead of running on to max_new_tokens.
    stop_after: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.stop_token_ids = tuple(int(t) for t in self.stop_token_ids)
        if self.stop_after is not None and self.stop_after[1] < 0:
            raise RptError(f"stop_after needs n >= 0 tokens after the trigger, got {self.stop_after}")
        if self.max_new_tokens < 1:
            raise RptError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise RptError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.temperature == 0:
            self.greedy = True
        if self.top_k < 0:
            raise RptError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise RptError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")


@dataclass
class Generation:
    tokens: torch.Tensor  # (N, T_new) long; row i*G + j = sample j of prompt i; pad_id after a row stops
    logprobs: torch.Tensor  # (N, T_new) float32: log_softmax(logits / T)[token]; 0 where mask is False
    mask: torch.Tensor  # (N, T_new) bool: generated tokens up to and including the stop token
    finished: torch.Tensor  # (N,) bool: the row stopped (stop token or stop_after; False = cut at the cap)
    prompt_index: torch.Tensor  # (N,) long: which prompt each row continues

    def lengths(self) -> torch.Tensor:
        """Generated tokens per row (N,), stop token included."""
        return self.mask.sum(-1)


# ------------------------------------------------------------------------------------------ sampling math


def exponential_race(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """argmax_i w_i / E_i with E_i ~ Exp(1): an exact draw of i with probability w_i / sum(w).

    weights: (N, K) >= 0, unnormalised -> (N,) long.
    """
    noise = torch.empty_like(weights).exponential_(generator=generator)  # (N, K)
    # A draw of exactly 0 would turn a zero weight into 0 * inf = NaN, which argmax would pick.
    noise.clamp_min_(torch.finfo(noise.dtype).tiny)
    return noise.reciprocal_().mul_(weights).argmax(-1)


def race_sample(
    weights: torch.Tensor, generator: torch.Generator | None, block: int = RACE_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact draw from unnormalised weights (N, V) with ~V/block + block random numbers per row.

    P(token) = P(its block) * P(token | block) = (block mass / total) * (w / block mass), each factor
    drawn with an exponential race. Returns (tokens (N,) long, total weight (N,)); the total comes free
    from the block masses.
    """
    N, V = weights.shape
    if V <= 2 * block:
        return exponential_race(weights, generator), weights.sum(-1)
    pad = (-V) % block
    if pad:
        weights = F.pad(weights, (0, pad))  # zero weight: never drawn
    blocks = weights.view(N, -1, block)  # (N, V/block, block)
    block_mass = blocks.sum(-1)  # (N, V/block)
    b = exponential_race(block_mass, generator)  # (N,)
    inner = blocks[torch.arange(N, device=weights.device), b]  # (N, block)
    return b * block + exponential_race(inner, generator), block_mass.sum(-1)


def float_copy(logits: torch.Tensor, work: torch.Tensor | None) -> torch.Tensor:
    """logits (N, V) as a float32 tensor the sampler may overwrite.

    ``work`` is a reused float32 scratch buffer, or ``logits`` itself when the caller no longer needs them
    (float32 models: saves a copy); None makes a fresh copy.
    """
    if work is None:
        return logits.to(torch.float32, copy=True)
    return work if work is logits else work.copy_(logits)


def picked(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """logits[i, tokens[i]] as float32 (N,)."""
    return logits.gather(-1, tokens[:, None])[:, 0].float()


def sample_greedy(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    work: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """argmax; log-prob under the untempered distribution (greedy logits are never scaled).
    logits (N, V) -> tokens (N,), logprobs (N,)."""
    tokens = logits.argmax(-1)  # (N,)
    return tokens, picked(logits, tokens) - torch.logsumexp(float_copy(logits, work), -1)


def softmax_(z: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim of a float32 (N, V) tensor, in place (returns ``z``).

    One fused kernel that works row by row (a 151,936-entry row stays in cache), written into its own
    input: last-dim softmax reads each element before writing it, and a test checks the aliasing.
    In place, no (N, V) tensor is allocated per step (on a CPU a fresh one costs its page faults).
    """
    return torch.ops.aten._softmax.out(z, -1, False, out=z)


def sample_full(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    work: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample from softmax(logits) over the whole vocabulary: logits (N, V) already divided by the
    temperature (``generate`` scales the hidden state before the LM head) -> tokens, logprobs (N,).

    Two passes over the vocabulary (the fused softmax, block sums), in place on ``work``.
    """
    del params  # the temperature is already in the logits
    probs = softmax_(float_copy(logits, work))  # (N, V) float32
    tokens, _ = race_sample(probs, generator)  # (N,)
    # A drawn token has probability > 0 (a zero weight never wins the race), so its log is finite.
    return tokens, picked(probs, tokens).log()


def filter_candidates(z: torch.Tensor, top_k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens top-k then top-p allow, as (values, vocab ids) (N, K), values descending; dropped = -inf.

    Top-p keeps the smallest prefix whose mass reaches top_p, measured after top-k (as transformers does).
    Without top-k, candidates grow from the top NUCLEUS_FIRST_K until every row's prefix holds top_p of the
    mass, so a peaked distribution never sorts the whole vocabulary.
    """
    V = z.shape[-1]
    if top_k:
        values, ids = z.topk(min(top_k, V), dim=-1)  # (N, K)
    elif top_p < 1.0:
        k, lse = min(NUCLEUS_FIRST_K, V), torch.logsumexp(z, -1, keepdim=True)  # lse: (N, 1)
        while True:
            values, ids = z.topk(k, dim=-1)  # (N, k)
            if k == V or bool(((values - lse).exp().sum(-1) >= top_p).all()):
                break
            k = min(8 * k, V)
    else:
        return z, torch.arange(V, device=z.device).expand_as(z)
    if top_p < 1.0:
        probs = values.softmax(-1)  # (N, K): renormalised over the candidates
        mass_before = probs.cumsum(-1) - probs  # (N, K)
        values = values.masked_fill(mass_before >= top_p, float("-inf"))  # the first token always stays
    return values, ids


def sample_filtered(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    work: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample among the top-k / top-p candidates of logits already divided by the temperature; the
    log-prob is still under the full tempered softmax."""
    z = float_copy(logits, work)  # (N, V)
    lse = torch.logsumexp(z, -1)  # (N,)
    values, ids = filter_candidates(z, params.top_k, params.top_p)  # (N, K)
    choice = exponential_race((values - values.amax(-1, keepdim=True)).exp(), generator)  # (N,)
    tokens = ids.gather(-1, choice[:, None])[:, 0]  # (N,)
    return tokens, values.gather(-1, choice[:, None])[:, 0] - lse


# (logits / temperature (N, V), params, generator, float32 work buffer (N, V) or None)
#   -> (tokens (N,), logprobs (N,))
Sampler = Callable[
    [torch.Tensor, SamplingParams, "torch.Generator | None", "torch.Tensor | None"],
    tuple[torch.Tensor, torch.Tensor],
]
SAMPLERS: dict[str, Sampler] = {"greedy": sample_greedy, "full": sample_full, "filtered": sample_filtered}


def sampler_for(params: SamplingParams) -> Sampler:
    if params.greedy:
        return SAMPLERS["greedy"]
    return SAMPLERS["filtered" if params.top_k or params.top_p < 1.0 else "full"]


# ---------------------------------------------------------------------------------------------- the loop


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask (P, L), each prompt right-aligned so its last token is column -1."""
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), pad_id, dtype=torch.long)  # (P, L)
    mask = torch.zeros(len(prompts), L, dtype=torch.bool)  # (P, L)
    for i, p in enumerate(prompts):
        ids[i, L - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[i, L - len(p) :] = True
    return ids.to(device), mask.to(device)


def _check_inputs(prompts: list[list[int]], num_samples: int, pad_id: int, vocab_size: int) -> None:
    if not prompts:
        raise RptError("generate: no prompts")
    if num_samples < 1:
        raise RptError(f"generate: num_samples must be >= 1, got {num_samples}")
    empty = [i for i, p in enumerate(prompts) if len(p) == 0]
    if empty:
        raise RptError(f"generate: prompt {empty[0]} is empty ({len(empty)} empty prompts)")
    for i, p in enumerate(prompts):
        if min(p) < 0 or max(p) >= vocab_size:
            raise RptError(f"generate: prompt {i} has a token id outside [0, {vocab_size})")
    if not 0 <= pad_id < vocab_size:
        raise RptError(f"generate: pad_id {pad_id} is outside [0, {vocab_size})")


def _cache_dtype(model) -> torch.dtype:
    """The KV cache holds what attention computes in: autocast's dtype when it is on, else the dtype a
    wrapper computes in (FSDP2's param_dtype: its sharded parameters stay float32), else the weights'."""
    device_type = model.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return getattr(model, "compute_dtype", None) or model.dtype


def free_device_memory(device: torch.device) -> int:
    """Bytes a new allocation can take on a CUDA device: what the driver has free plus what PyTorch's
    allocator holds cached but unused (``memory_reserved - memory_allocated``). ``mem_get_info`` alone
    misses the cache, which after the first update holds the freed activations: rollouts would shrink."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def rows_that_fit(model, slots: int, free_bytes: int, fraction: float = 0.5) -> int:
    """Rows of ``slots`` KV-cache slots (plus their logits and float32 sampler scratch) that fit in
    ``fraction`` of ``free_bytes``: how many rows one generate() call may take on an accelerator."""
    cfg = model.config
    elem = torch.empty((), dtype=_cache_dtype(model)).element_size()
    per_slot = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * elem  # K and V
    per_row = slots * per_slot + 3 * 4 * cfg.vocab_size
    return max(1, int(fraction * free_bytes) // per_row)


def _compaction(done: torch.Tensor, n_live: int, decoder: Decoder, options: DecodeOptions):
    """Rows to keep ((n,) long, ascending) when dropping finished rows is worth it now, else None.

    Live rows are kept; a captured step rounds the batch up to its row bucket with finished rows.
    """
    B = done.shape[0]
    n = min(decoder.rows_for(n_live), B)
    if not options.compact or B - n < max(1, options.min_dead_fraction * B):
        return None
    live_first = torch.argsort(done.to(torch.int8), stable=True)  # (B,): live rows, then finished ones
    return live_first[:n].sort().values


@torch.no_grad()
def generate(
    model,
    prompts: list[list[int]],
    params: SamplingParams,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    pad_id: int = 0,
    decode: DecodeOptions | None = None,
) -> Generation:
    """Sample ``num_samples`` continuations of each prompt (rows prompt-major: i * G + j).

    ``generator`` must live on the model's device. The output has as many columns as the longest row
    (max_new_tokens when some row ran to the cap). ``decode`` sets how the loop runs (host checks,
    compaction, a compiled / CUDA-graph step: ``rpt_core.model.decode.DecodeOptions``); the tokens do
    not depend on it, except that a sampled run draws its random numbers in another order when rows
    leave the batch at other steps.
    """
    _check_inputs(prompts, num_samples, pad_id, model.config.vocab_size)
    options = decode or DecodeOptions()
    device, G, T_max = model.device, num_samples, params.max_new_tokens
    sample = sampler_for(params)
    stance = contextlib.nullcontext() if options.compile else torch.compiler.set_stance("force_eager")
    with stance:  # layers compiled for training (--compile) stay off the cache path
        return _generate(model, prompts, params, G, T_max, generator, pad_id, options, sample, device)


def _generate(model, prompts, params, G, T_max, generator, pad_id, options, sample, device) -> Generation:
    # Prefill the P distinct prompts once, with a cache sized for them alone; logits of the last column only.
    ids, attn = left_pad(prompts, pad_id, device)  # (P, L)
    P, L = ids.shape
    prefill_cache = model.new_kv_cache(P, L, dtype=_cache_dtype(model))
    last_hidden = model.hidden_states(ids, attention_mask=attn, kv_cache=prefill_cache)[:, -1]  # (P, H)
    # logits / T = (h / T) W^T: the temperature scales the (N, H) hidden state, not the (N, V) logits.
    scale = 1.0 if params.greedy else 1.0 / params.temperature
    logits = lm_head_rows(model.lm_head, last_hidden * scale).repeat_interleave(G, dim=0)  # (N, V)
    cache = prefill_cache.repeat_interleave(G, max_len=L + T_max)  # row i*G + j <- prompt i
    del prefill_cache
    decoder = Decoder(model, cache, options, scale)

    # Outputs are step-major (T_max, N) so each step writes contiguous rows; rows that left the batch keep
    # pad / 0 / False. ``rows`` maps the running batch (B <= N, shrinking) to output rows.
    N = P * G
    out_tokens = torch.full((T_max, N), pad_id, dtype=torch.long, device=device)
    out_logprobs = torch.zeros(T_max, N, dtype=torch.float32, device=device)
    out_mask = torch.zeros(T_max, N, dtype=torch.bool, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    rows = torch.arange(N, device=device)  # (B,)
    done = torch.zeros(N, dtype=torch.bool, device=device)  # (B,)
    # Sampler scratch, reused every step; float32 models let the sampler overwrite their fresh logits instead.
    V = logits.shape[-1]
    work = None if logits.dtype == torch.float32 else torch.empty(N, V, dtype=torch.float32, device=device)
    stop_ids = torch.tensor(params.stop_token_ids, dtype=torch.long, device=device)
    trigger, after_n = params.stop_after or (None, 0)
    since = torch.full((N,), -1, dtype=torch.long, device=device)  # (B,) tokens since the trigger, or -1
    stopping = bool(stop_ids.numel()) or trigger is not None
    check_every = options.check_every or (CUDA_CHECK_EVERY if device.type == "cuda" else 1)
    for t in range(T_max):
        B = rows.shape[0]
        new, lp = sample(logits, params, generator, logits if work is None else work[:B])  # (B,), (B,)
        live = ~done  # (B,)
        new = new.masked_fill(done, pad_id)
        out_tokens[t].index_copy_(0, rows, new)
        out_logprobs[t].index_copy_(0, rows, lp.masked_fill(done, 0.0))
        out_mask[t].index_copy_(0, rows, live)
        if trigger is not None:
            since = torch.where(live & (since >= 0), since + 1, since)
            since = torch.where(live & (since < 0) & (new == trigger), 0, since)
            done = done | (live & (since >= after_n))
        if stop_ids.numel():
            done = done | (live & torch.isin(new, stop_ids))
        if t + 1 == T_max:
            break  # the last token's logits would never be used
        if stopping and (t + 1) % check_every == 0:
            n_live = int((~done).sum())  # the loop's one host sync, every check_every steps
            if n_live == 0:
                break
            keep = _compaction(done, n_live, decoder, options)
            if keep is not None:  # finished rows leave: cache, running state and the step's inputs
                finished.index_copy_(0, rows, done)
                cache.keep_rows(keep)
                rows, done, since, new, live = rows[keep], done[keep], since[keep], new[keep], live[keep]
        # Finished rows still in the batch ride along until the next compaction: their pad tokens are
        # marked invalid (``live``), so no live row attends to them.
        logits = decoder(new, live)  # (B, V), model dtype
    finished.index_copy_(0, rows, done)

    steps = int(out_mask.sum(0).max())  # the longest row; a sync once per call
    return Generation(
        tokens=out_tokens[:steps].t().contiguous(),
        logprobs=out_logprobs[:steps].t().contiguous(),
        mask=out_mask[:steps].t().contiguous(),
        finished=finished,
        prompt_index=torch.arange(P, device=device).repeat_interleave(G),
    )
