"""Rotary position embedding (RoPE): the inverse frequencies of each supported variant, cos/sin for integer
positions, and the half-split rotation applied to queries and keys.

A variant is a function ``(head_dim, theta, params, max_position_embeddings) -> (inv_freq, scaling)`` in
``ROPE_TYPES``: ``inv_freq`` is float32 (head_dim / 2,) on the CPU and ``scaling`` multiplies cos and sin
(YaRN's attention factor; 1 elsewhere). The formulas are the published ones, written so that they give the
same float32 numbers as transformers' ``ROPE_INIT_FUNCTIONS``:

* ``default``: inv_freq_i = theta ** (-2i / d).
* ``llama3`` (Llama 3.1 / 3.2, R1-Distill-Llama): with wavelength w_i = 2 pi / inv_freq_i and the original
  context L, frequencies whose wavelength is shorter than L / high_freq_factor are kept, longer than
  L / low_freq_factor are divided by ``factor``, and in between they are blended linearly in L / w_i.
* ``yarn`` (Qwen3 / Qwen2.5 long context): each frequency is a blend of itself (extrapolation) and itself
  divided by ``factor`` (interpolation); the blend ramps over the dimensions whose number of rotations
  within the original context lies between ``beta_slow`` and ``beta_fast``. cos/sin are multiplied by the
  attention factor 0.1 ln(factor) + 1 (or by the ``mscale`` / ``mscale_all_dim`` ratio, or by an explicit
  ``attention_factor``).

``normalize_scaling`` turns a config's ``rope_scaling`` / ``rope_parameters`` dict into the one canonical
form the model keeps (and writes back), refusing every type and key it does not know with one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from rpt_core.runtime.errors import RptError

Params = Mapping[str, Any]
RopeFn = Callable[[int, float, Params, int], tuple[torch.Tensor, float]]

# Keys each scaled variant reads: (required, optional). ``original_max_position_embeddings`` defaults to
# max_position_embeddings when absent (as transformers does), so it is filled in rather than required.
_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "default": (frozenset(), frozenset()),
    "llama3": (frozenset({"factor", "low_freq_factor", "high_freq_factor"}), frozenset()),
    "yarn": (
        frozenset(),
        frozenset(
            {"factor", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"}
        ),
    ),
}
_ORIGINAL = "original_max_position_embeddings"


def _exponents(head_dim: int) -> torch.Tensor:
    """2i / d for i < d / 2, float32 (hd/2,); on the CPU even while a model is built on the meta device."""
    return torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim


def default_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """theta ** (-2i / d), float32 (hd/2,)."""
    return 1.0 / (theta ** _exponents(head_dim))


def _default(head_dim: int, theta: float, params: Params, max_pos: int) -> tuple[torch.Tensor, float]:
    return default_inv_freq(head_dim, theta), 1.0


def _llama3(head_dim: int, theta: float, params: Params, max_pos: int) -> tuple[torch.Tensor, float]:
    inv_freq = default_inv_freq(head_dim, theta)  # (hd/2,)
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    context = params[_ORIGINAL]
    wavelen = 2 * math.pi / inv_freq
    long_wave = wavelen > context / low  # low frequencies: fully interpolated
    short_wave = wavelen < context / high  # high frequencies: untouched
    scaled = torch.where(long_wave, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low) / (high - low)  # 0 at the long end of the band, 1 at the short end
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    return torch.where(~short_wave & ~long_wave, blended, scaled), 1.0


def yarn_attention_factor(
    factor: float, mscale: float | None = None, mscale_all_dim: float | None = None
) -> float:
    """YaRN's cos/sin multiplier: 0.1 m ln(s) + 1 for scale s > 1 (m = 1, or the mscale ratio)."""

    def m(scale: float, weight: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * weight * math.log(scale) + 1.0

    if mscale and mscale_all_dim:
        return float(m(factor, mscale) / m(factor, mscale_all_dim))
    return m(factor)


def _yarn(head_dim: int, theta: float, params: Params, max_pos: int) -> tuple[torch.Tensor, float]:
    context = params[_ORIGINAL]
    factor = params.get("factor")
    if factor is None:  # DeepSeek-style configs give the ratio of the two context lengths instead
        factor = max_pos / context
    attention = params.get("attention_factor")
    if attention is None:
        attention = yarn_attention_factor(factor, params.get("mscale"), params.get("mscale_all_dim"))
    beta_fast = params.get("beta_fast") or 32  # rotations at which a dimension is fully extrapolated
    beta_slow = params.get("beta_slow") or 1  # ... and fully interpolated

    def dim_of(rotations: float) -> float:
        """The (fractional) dimension index that turns ``rotations`` times over the original context."""
        return head_dim * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_of(beta_fast), dim_of(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # a zero-width ramp would divide by zero
    dims = torch.arange(head_dim // 2, dtype=torch.float32, device="cpu")  # (hd/2,)
    ramp = ((dims - low) / (high - low)).clamp(0, 1)  # 0 below low, 1 above high
    powers = theta ** _exponents(head_dim)  # (hd/2,)
    extrapolate = 1 - ramp  # weight of the unscaled frequency: 1 on the fast-rotating dimensions
    inv_freq = (1.0 / (factor * powers)) * (1 - extrapolate) + (1.0 / powers) * extrapolate
    return inv_freq, float(attention)


ROPE_TYPES: dict[str, RopeFn] = {"default": _default, "llama3": _llama3, "yarn": _yarn}


def normalize_scaling(scaling: Params | None, max_position_embeddings: int) -> dict[str, Any] | None:
    """The canonical scaling dict (``rope_type`` + its parameters, no ``rope_theta``), or None for plain RoPE.

    Accepts transformers 4's ``rope_scaling`` (``type`` or ``rope_type``) and transformers 5's
    ``rope_parameters`` (which also carries ``rope_theta``: the caller reads it, it is dropped here).
    """
    if not scaling:
        return None
    params = {k: v for k, v in scaling.items() if k not in ("type", "rope_type", "rope_theta")}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise RptError(f"RoPE type '{kind}' is not supported (supported: {', '.join(ROPE_TYPES)})")
    partial = params.pop("partial_rotary_factor", 1.0)
    if partial != 1.0:
        raise RptError(f"partial rotary embeddings (partial_rotary_factor={partial}) are not supported")
    if kind == "default":
        if params:
            raise RptError(f"default RoPE takes no parameters, got {sorted(params)}")
        return None
    required, optional = _KEYS[kind]
    if missing := required - set(params):
        raise RptError(f"RoPE type '{kind}' needs {', '.join(sorted(missing))} in its parameters")
    if unknown := set(params) - required - optional - {_ORIGINAL}:
        raise RptError(f"RoPE type '{kind}': unknown parameters {', '.join(sorted(unknown))}")
    params.setdefault(_ORIGINAL, max_position_embeddings)
    return {"rope_type": kind, **params}


def rope_frequencies(
    head_dim: int, theta: float, scaling: Params | None, max_position_embeddings: int
) -> tuple[torch.Tensor, float]:
    """(inv_freq float32 (hd/2,) on the CPU, cos/sin multiplier) of a config's RoPE."""
    kind = scaling["rope_type"] if scaling else "default"
    return ROPE_TYPES[kind](head_dim, theta, scaling or {}, max_position_embeddings)


def rope_cos_sin(
    position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype, scaling: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (B, T, head_dim) for integer positions (B, T), computed in float32, then cast."""
    freqs = position_ids.float()[..., None] * inv_freq.float()  # (B, T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
    cos, sin = emb.cos(), emb.sin()
    if scaling != 1.0:
        cos, sin = cos * scaling, sin * scaling
    return cos.to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, hd) by cos/sin (B, T, hd) with the half-split (rotate_half) convention."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hd)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


class RotaryEmbedding:
    """A model's RoPE: inv_freq computed once on the CPU in float32, copied once to each device used.

    Deliberately not a buffer: ``model.to(torch.bfloat16)`` would round a floating buffer to bf16 (and
    ``from_pretrained`` builds the model on the meta device), while the angles must stay float32.
    """

    def __init__(self, head_dim: int, theta: float, scaling: Params | None, max_position_embeddings: int):
        self.inv_freq, self.scaling = rope_frequencies(head_dim, theta, scaling, max_position_embeddings)
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def __call__(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (B, T, hd) in ``dtype`` for positions (B, T)."""
        device = position_ids.device
        inv_freq = self._on_device.get(device)
        if inv_freq is None:
            inv_freq = self._on_device[device] = self.inv_freq.to(device)
        return rope_cos_sin(position_ids, inv_freq, dtype, self.scaling)
