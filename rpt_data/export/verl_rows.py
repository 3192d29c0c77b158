"""verl's RL dataset format, one row at a time: the Parquet schema, the row a shard row becomes, and the
verl settings a template needs (``rpt_data.export.verl`` streams shards through it).

verl trains from Parquet rows with ``data_source``, ``prompt`` (chat messages), ``ability``,
``reward_model`` and ``extra_info`` columns and scores completions with a custom ``compute_score``
(``rpt_train.verl_reward``); ``verl_row`` fills them so that the score equals ``rpt-train``'s. The checks
refuse what verl cannot run: a template that stops generation a number of tokens after a marker, and a
``</think>`` that verl's decoding would delete.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from rpt_core.runtime.errors import RptError
from rpt_core.text.chat import THINK_CLOSE
from rpt_core.text.prompts import PromptTemplate, Qwen3ChatPromptTemplate, fill_instruction
from rpt_core.verl_reward import DATA_SOURCE

if TYPE_CHECKING:
    from rpt_core.text.tokenizer import Tokenizer

FORMAT = "verl-rl-parquet"
EXPORT_VERSION = 1
ABILITY = "next-token-reasoning"
REWARD_FUNCTION = {"path": "rpt_train/verl_reward.py", "name": "compute_score"}
# verl's chat template for ``plain``: the prompt is the user content verbatim (jinja, as HF applies it).
RAW_CHAT_TEMPLATE = "{% for message in messages %}{{ message.content }}{% endfor %}"

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SCHEMA = pa.schema(
    [
        pa.field("data_source", pa.string()),  # "rpt": verl picks the reward function by it
        pa.field("prompt", pa.list_(MESSAGE)),  # chat messages; verl applies the chat template
        pa.field("ability", pa.string()),
        pa.field("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        pa.field(
            "extra_info",
            pa.struct(
                [
                    ("split", pa.string()),
                    ("index", pa.int64()),  # row number within this file
                    ("doc_id", pa.string()),
                    ("position", pa.int32()),
                    ("entropy", pa.float32()),
                    ("label_b64", pa.string()),  # the exact label bytes
                    ("boundaries", pa.list_(pa.int32())),  # valid prefix lengths of the label, in bytes
                    ("template", pa.string()),  # how the prompt was rendered, so how to extract
                    ("reward", pa.string()),
                    ("format_penalty", pa.float64()),
                    # the label's span class (rpt_core.data.corpus.spans); null for shards built without
                    # spans, so verl-side analyses can break results down by class like `rpt-train eval`
                    ("span_class", pa.string()),
                ]
            ),
        ),
    ],
    metadata={b"rpt.export": f"{FORMAT}/{EXPORT_VERSION}".encode()},
)


def prompt_messages(template: PromptTemplate, context: str) -> list[dict[str, str]]:
    """verl's ``prompt`` column: the messages that verl renders with the model's chat template.

    A Qwen3 chat prompt template's user turn is exactly the one its ``render`` gives to ``render_chat``;
    any other template (``plain``) sends its whole rendered prompt, which verl renders verbatim under
    ``RAW_CHAT_TEMPLATE``.
    """
    if isinstance(template, Qwen3ChatPromptTemplate):
        return [{"role": "user", "content": fill_instruction(template.instruction, context)}]
    return [{"role": "user", "content": template.render(context)}]


def label_text(label: bytes) -> tuple[str, bool]:
    """(display text of a label, whether it is valid UTF-8); invalid bytes show as U+FFFD."""
    try:
        return label.decode("utf-8"), True
    except UnicodeDecodeError:
        return label.decode("utf-8", errors="replace"), False


def verl_row(
    row: dict[str, Any],
    split: str,
    index: int,
    template: PromptTemplate,
    reward: str = "prefix",
    format_penalty: float = 0.0,
    context: str | None = None,
) -> dict[str, Any]:
    """One verl row of one shard row; ``context`` replaces the row's own (e.g. truncated)."""
    label = bytes(row["label"])
    text, _ = label_text(label)
    return {
        "data_source": DATA_SOURCE,
        "prompt": prompt_messages(template, row["context"] if context is None else context),
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": text},
        "extra_info": {
            "split": split,
            "index": index,
            "doc_id": row["doc_id"],
            "position": row["position"],
            "entropy": row["entropy"],
            "label_b64": base64.b64encode(label).decode("ascii"),
            "boundaries": [int(b) for b in row["boundaries"]],
            "template": template.name,
            "reward": reward,
            "format_penalty": float(format_penalty),
            # only a row read with the column has the key (``iter_rows``: null for an older shard)
            **({"span_class": row["span_class"]} if "span_class" in row else {}),
        },
    }


def check_verl_can_stop(template: PromptTemplate) -> None:
    """Refuse a template that stops generation by a rule of its own (``think``: ``answer_tokens`` after
    ``</think>``): verl's vLLM rollouts stop only at end-of-sequence tokens or the length cap, and the text
    ``compute_score`` receives cannot be cut at a token count."""
    if template.stop_after(lambda token: 0) is not None:
        raise RptError(
            f"the {template.name} template ends generation a fixed number of tokens after a marker token, "
            "which verl's rollouts cannot do; export with qwen3-think, answer-tags or plain"
        )


def check_think_end(template: PromptTemplate, tokenizer: Tokenizer) -> None:
    """Refuse a thinking template with a tokenizer whose ``</think>`` is special: verl decodes completions
    with ``skip_special_tokens=True``, which would delete it, so no completion could ever be scored."""
    tid = tokenizer.token_to_id(THINK_CLOSE)
    if template.thinks and tid is not None and tid in tokenizer.special_ids:
        raise RptError(
            f"{tokenizer.source}: {THINK_CLOSE} (id {tid}) is a special token, and verl decodes completions "
            f"with skip_special_tokens=True, so it would vanish and every {template.name} completion would "
            f'score the format penalty; mark it "special": false in the model\'s tokenizer.json and '
            "tokenizer_config.json (the ids do not change)"
        )


def verl_settings(template: PromptTemplate, longest_prompt: int | None) -> dict[str, Any]:
    """How verl must be configured for these rows (``pipelines/verl-grpo.sh`` reads it from the manifest).

    ``max_prompt_length`` is the longest rendered prompt in tokens (None without a tokenizer): verl
    left-truncates longer prompts at the token level, which would cut the instruction, not the context.
    """
    chat = isinstance(template, Qwen3ChatPromptTemplate)
    return {
        "max_prompt_length": longest_prompt,
        "data_source": DATA_SOURCE,
        "reward_function": REWARD_FUNCTION,
        "prompt_form": "chat" if chat else "raw",
        # chat: the model's own chat template; raw: the content verbatim
        "custom_chat_template": None if chat else RAW_CHAT_TEMPLATE,
        "enable_thinking": template.thinks,
        # plain's prediction is its first answer_tokens tokens: verl must generate no more
        "max_response_length": template.max_new_tokens,
    }
