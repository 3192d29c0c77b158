"""RPT's reward as a verl custom reward function: ``compute_score`` with verl's signature.

verl (Ray + FSDP + vLLM, the RPT paper's own stack) calls ``compute_score(data_source, solution_str,
ground_truth, extra_info)`` once per completion when its config says ``custom_reward_function.path=
<this file>`` and ``custom_reward_function.name=compute_score``. The rows come from ``rpt-data export
verl`` (``rpt_data.export.verl``), whose ``extra_info`` carries what a string ``ground_truth`` cannot:
the exact label bytes (``label_b64``, base64), the valid boundary byte lengths (``boundaries``), the
prompt template the prompt was rendered with, and the reward settings of the export (``reward``,
``format_penalty``; ``custom_reward_function.reward_kwargs`` may override those two).

Nothing is re-implemented here: the prediction is ``load_template(name).extract(text)`` and the reward is
``rpt_core.reward.compute_rewards``, the code ``rpt-train run`` and ``rpt-train eval`` score with,
so for the same completion text the two cannot disagree.

What verl hands us is not the token ids but ``tokenizer.decode(response_ids, skip_special_tokens=True)``
(both of verl's naive reward managers). ``rpt-train`` decodes with special tokens kept and drops only the
final stop token. The two texts are equal, and so are the rewards, when

* the stop token (``<|im_end|>`` / ``<|endoftext|>``) is special, as in Qwen3: verl drops it, rpt strips
  it; a ``plain`` completion that is only a stop token is "nothing extracted" on both sides;
* ``</think>`` is *not* special, as in Qwen3 (it is an added token with ``special: false``), so it
  survives verl's decoding. With a tokenizer that marks ``</think>`` special, verl deletes it before this
  function runs and nothing can bring it back: every completion of a thinking template then has no
  reasoning end, and scores the format penalty, exactly as ``rpt-train`` scores a completion that never
  closed its reasoning. ``rpt-data export verl --tokenizer`` refuses such a tokenizer for a thinking
  template; mark the token ``"special": false`` in the model's tokenizer files (the ids do not change);
* the completion holds no other special token (verl deletes them; rpt keeps their text), and was not cut
  off at the length cap: ``rpt-train`` gives a cut-off completion the format penalty, while verl does not
  tell this function that the response hit ``data.max_response_length``, so a completion cut *after* a
  complete answer is scored on its answer here. Keep the cap generous (rpt's ``--max-new-tokens``).

``plain`` cuts its prediction at ``answer_tokens`` tokens; from text it cannot, so verl must generate at
most that many tokens (``data.max_response_length = answer_tokens``, as ``pipelines/verl-grpo.sh`` sets).
``think`` stops generation ``answer_tokens`` after ``</think>``, which verl's rollouts cannot do, so
``rpt-data export verl`` refuses it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from rpt_core.reward import compute_rewards
from rpt_core.runtime.errors import RptError
from rpt_core.text.prompts import load_template

DATA_SOURCE = "rpt"  # the data_source of every exported row: verl picks the reward function by it
DEFAULT_TEMPLATE = "qwen3-think"  # rows without a "template" key: rpt-train's default


def label_of(extra_info: Mapping[str, Any]) -> tuple[bytes, list[int]]:
    """The exact label bytes and boundary byte lengths of an exported row's ``extra_info``."""
    try:
        label = base64.b64decode(extra_info["label_b64"], validate=True)
        boundaries = [int(b) for b in extra_info["boundaries"]]
    except KeyError as e:
        raise RptError(
            f"extra_info has no {e.args[0]!r}: score rows written by `rpt-data export verl`"
        ) from None
    except (binascii.Error, TypeError, ValueError) as e:
        raise RptError(f"extra_info: unreadable label_b64 / boundaries ({e})") from None
    return label, boundaries


def score_text(
    solution_str: str,
    label: bytes,
    boundaries: Sequence[int],
    template: str = DEFAULT_TEMPLATE,
    reward: str = "prefix",
    format_penalty: float = 0.0,
) -> tuple[float, str | None]:
    """(reward, extracted prediction or None) of one completion text: the template's extraction, then
    ``compute_rewards``, exactly as ``rpt-train`` scores a completion."""
    prediction = load_template(template).extract(solution_str)
    (score,) = compute_rewards([prediction], [label], [list(boundaries)], reward, format_penalty)
    return score, prediction


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    reward: str | None = None,
    format_penalty: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's custom reward function for rows of ``rpt-data export verl`` (see the module docstring).

    Returns ``{"score": reward, "acc": 1.0 when the full reward was earned, "pred": the extracted
    prediction ("" when none), "format_ok": whether anything could be extracted}``; verl logs the extra
    keys (``pred`` also feeds its majority-vote validation metrics). ``ground_truth`` is display text only
    (a label that is not valid UTF-8 is shown with U+FFFD); the bytes compared are ``label_b64``.
    ``reward`` / ``format_penalty`` come from ``custom_reward_function.reward_kwargs`` and override the
    values the export stored in the row. Other keyword arguments verl may pass are ignored.
    """
    del ground_truth, kwargs
    if data_source != DATA_SOURCE:
        raise RptError(
            f"rpt_train.verl_reward.compute_score scores data_source {DATA_SOURCE!r} rows only, "
            f"got {data_source!r}; dispatch other sources to their own reward function"
        )
    if extra_info is None:
        raise RptError("extra_info is missing: score rows written by `rpt-data export verl`")
    label, boundaries = label_of(extra_info)
    score, prediction = score_text(
        solution_str,
        label,
        boundaries,
        template=str(extra_info.get("template") or DEFAULT_TEMPLATE),
        reward=str(reward if reward is not None else extra_info.get("reward") or "prefix"),
        format_penalty=float(
            format_penalty if format_penalty is not None else extra_info.get("format_penalty") or 0.0
        ),
    )
    return {
        "score": score,
        "acc": 1.0 if score == 1.0 else 0.0,
        "pred": "" if prediction is None else prediction,
        "format_ok": prediction is not None,
    }
