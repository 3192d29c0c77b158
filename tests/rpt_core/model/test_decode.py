"""The fixed-shape decode step and the cache operations under it: a step over a padded key window equals a
full forward, compaction keeps exactly the chosen rows in place, replication copies without a temporary,
row buckets pad by at most 25%, and the compiled step gives the eager tokens on a CPU (the GPU check
covers CUDA graphs)."""

from __future__ import annotations

import shutil

import pytest
import torch

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.model.decode import DecodeOptions, Decoder, decode_step, row_bucket
from rpt_core.model.kv_cache import KVCache
from rpt_core.runtime.errors import RptError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen3Config.preset(
        "tiny",
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_key_value_heads=2,
        head_dim=16,
    )
    return Qwen3ForCausalLM(cfg).eval()


def random_cache(rows: int, used: int, max_len: int = 10) -> KVCache:
    cache = KVCache(2, rows, 2, 4, max_len)
    cache.k.normal_()
    cache.v.normal_()
    cache.valid[:, :used] = torch.rand(rows, used) > 0.3
    cache.seen = torch.arange(rows) + 5
    cache.length = used
    return cache


def test_row_bucket_by_hand():
    assert [row_bucket(n) for n in (1, 8, 9, 10, 11, 17, 20, 33, 100, 257, 512)] == [
        8, 8, 10, 10, 12, 20, 20, 40, 112, 320, 512,
    ]  # fmt: skip
    assert all(n <= row_bucket(n) < 1.25 * n + 1 for n in range(9, 2000))


def test_keep_rows_moves_the_kept_rows_to_the_front_in_place():
    cache = random_cache(rows=6, used=7)
    before = {name: getattr(cache, name).clone() for name in ("k", "v", "valid", "seen")}
    pointers = (cache.k.data_ptr(), cache.v.data_ptr(), cache.valid.data_ptr())
    keep = torch.tensor([0, 2, 3, 5])
    cache.keep_rows(keep)
    assert cache.batch == 4 and (cache.k.data_ptr(), cache.v.data_ptr(), cache.valid.data_ptr()) == pointers
    assert torch.equal(cache.k[:, :, :, :7], before["k"][:, keep, :, :7])
    assert torch.equal(cache.v[:, :, :, :7], before["v"][:, keep, :, :7])
    assert torch.equal(cache.valid[:, :7], before["valid"][keep, :7])
    assert torch.equal(cache.seen, before["seen"][keep])


def test_repeat_interleave_copies_each_row_n_times():
    cache = random_cache(rows=3, used=4, max_len=4)
    big = cache.repeat_interleave(2, max_len=9)
    assert big.k.shape == (2, 6, 2, 9, 4) and big.length == 4 and int(big.slot) == 4
    assert torch.equal(big.k[:, :, :, :4], cache.k.repeat_interleave(2, dim=1))
    assert torch.equal(big.v[:, :, :, :4], cache.v.repeat_interleave(2, dim=1))
    assert not big.k[:, :, :, 4:].any() and torch.equal(big.seen, cache.seen.repeat_interleave(2))


@pytest.mark.parametrize("window", [0, 5, 64], ids=["exact", "padded", "max_len"])
def test_decode_step_over_a_key_window_equals_a_full_forward(model, window):
    """Left-padded prompts, prefilled; then two steps of decode_step with a window wider than needed."""
    prompts = [[5, 17, 3, 9], [7, 1]]
    ids = torch.tensor([[5, 17, 3, 9], [0, 0, 7, 1]])
    attn = ids != 0
    cache = model.new_kv_cache(2, 12)
    with torch.no_grad():
        model.hidden_states(ids, attention_mask=attn, kv_cache=cache)
        steps = [torch.tensor([11, 12]), torch.tensor([13, 14])]
        got = []
        live = torch.ones(2, dtype=torch.bool)
        for tok in steps:
            got.append(decode_step(model, tok, *cache.decode_inputs(live, window)))
            cache.advance(live)
        for row, prompt in enumerate(prompts):
            full = model(torch.tensor([prompt + [int(s[row]) for s in steps]]))[0]  # (len, V)
            for j in range(len(steps)):
                torch.testing.assert_close(got[j][row], full[len(prompt) + j], atol=1e-5, rtol=1e-5)


def test_decoder_keeps_the_cache_in_step_with_the_tokens(model):
    cache = model.new_kv_cache(3, 8)
    with torch.no_grad():
        model.hidden_states(torch.tensor([[1, 2], [3, 4], [5, 6]]), kv_cache=cache)
        decoder = Decoder(model, cache, DecodeOptions())
        live = torch.tensor([True, False, True])
        logits = decoder(torch.tensor([7, 0, 8]), live)
    assert logits.shape == (3, 300) and cache.length == 3 and int(cache.slot) == 3
    assert cache.seen.tolist() == [3, 2, 3] and cache.valid[:, 2].tolist() == [True, False, True]


def test_cuda_graphs_need_cuda(model):
    with pytest.raises(RptError):
        Decoder(model, model.new_kv_cache(1, 4), DecodeOptions(cuda_graphs=True))
    with pytest.raises(RptError):
        DecodeOptions(check_every=-1)


@pytest.mark.parametrize("rows", [1, 2, 3, 9, 16])
def test_lm_head_rows_equals_the_lm_head(model, rows):
    from rpt_core.model.decode import lm_head_rows

    hidden = torch.randn(rows, 64, generator=torch.Generator().manual_seed(rows))
    with torch.no_grad():
        got = lm_head_rows(model.lm_head, hidden)
        expected = model.lm_head(hidden)
    assert got.shape == (rows, 300) and got.is_contiguous()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
    reason="torch.compile needs a C++ compiler on a CPU",
)
def test_compiled_decode_gives_the_eager_tokens_as_rows_leave():
    """``DecodeOptions(compile=True)`` on a CPU (inductor, no CUDA graphs; about 15 s of compiling): greedy
    rows of different prompt lengths that stop at different steps give the eager path's tokens, mask and
    (to float rounding) log-probs, through every row bucket and key window the batch passes."""
    from rpt_core.model.generation import SamplingParams, generate

    torch.manual_seed(0)
    cfg = Qwen3Config.preset(
        "tiny", vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16
    )
    peaked = Qwen3ForCausalLM(cfg)
    peaked.init_weights(std=0.2)  # peaked distributions: no greedy near-ties for rounding to flip
    peaked = peaked.float().eval()
    prompts = [[5, 17, 3], [9, 8, 7, 6, 5, 4, 3], list(range(1, 13)), [42]] * 3
    free = generate(peaked, prompts, SamplingParams(max_new_tokens=24, greedy=True))
    stops = tuple(sorted({int(free.tokens[0, 2]), int(free.tokens[1, 6]), int(free.tokens[2, 20])}))
    params = SamplingParams(max_new_tokens=24, greedy=True, stop_token_ids=stops)
    eager = generate(peaked, prompts, params, num_samples=2)
    assert eager.lengths().unique().numel() > 2  # rows do leave the batch at different steps
    compiled = generate(peaked, prompts, params, num_samples=2, decode=DecodeOptions(compile=True))
    assert torch.equal(compiled.tokens, eager.tokens) and torch.equal(compiled.mask, eager.mask)
    assert (compiled.logprobs - eager.logprobs).abs().max().item() < 1e-4
