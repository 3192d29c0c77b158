"""Qwen3 chat prompts rendered in plain Python (no jinja, no transformers).

RPT asks the policy to reason before predicting the next token, so prompts go through Qwen3's chat
format. This reproduces what the official Qwen3 chat template produces for system / user / assistant
conversations without tools:

* a leading system message opens the prompt; a later one is rendered like any other turn;
* an assistant turn's reasoning comes from ``reasoning_content`` or, failing that, from a
  ``<think>...</think>`` prefix of its content, which is then stripped from the content;
* only assistant turns *after the last user query* keep a ``<think>`` block (the last turn always, an
  earlier one only when its reasoning is non-empty); older turns show their content alone;
* ``add_generation_prompt`` opens an assistant turn; with ``enable_thinking=False`` it also closes an empty
  think block so the model answers directly.

Tool calls / tool results are outside this scope and rejected with ``RptError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rpt_core.runtime.errors import RptError

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"  # Qwen3's thought tags: the one definition (prompts, generation, tokenizers)
THINK_CLOSE = "</think>"
EMPTY_THINK = f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"
ROLES = ("system", "user", "assistant")


def _turn(role: str, body: str) -> str:
    return f"{IM_START}{role}\n{body}{IM_END}\n"


def _is_tool_response(content: str) -> bool:
    return content.startswith("<tool_response>") and content.endswith("</tool_response>")


def last_query_index(messages: Sequence[Mapping]) -> int:
    """Index of the last user message that is a real query (not a wrapped tool response).

    Assistant turns after it belong to the answer in progress and keep their reasoning. Without any
    such user message it is the last index, so no earlier assistant turn keeps reasoning.
    """
    for index in range(len(messages) - 1, -1, -1):
        m = messages[index]
        if m["role"] == "user" and not _is_tool_response(m["content"]):
            return index
    return len(messages) - 1


def split_reasoning(message: Mapping) -> tuple[str, str]:
    """``(reasoning, content)`` of an assistant message, the way the Qwen3 template derives them."""
    content = message["content"]
    reasoning = message.get("reasoning_content")
    if reasoning is not None:
        return reasoning, content
    if THINK_CLOSE not in content:
        return "", content
    pieces = content.split(THINK_CLOSE)
    reasoning = pieces[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
    return reasoning, pieces[-1].lstrip("\n")


def _render_assistant(message: Mapping, keep_reasoning: bool, is_last: bool) -> str:
    reasoning, content = split_reasoning(message)
    if keep_reasoning and (is_last or reasoning):
        reasoning, content = reasoning.strip("\n"), content.lstrip("\n")
        body = f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{content}"
    else:
        body = content
    return _turn("assistant", body)


def _validate(messages: Sequence[Mapping]) -> None:
    if not messages:
        raise RptError("chat has no messages")
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            raise RptError(f"chat message {i}: role {role!r} not supported (expected one of {ROLES})")
        if not isinstance(m.get("content"), str):
            raise RptError(f"chat message {i} ({role}): content must be a string")
        if m.get("tool_calls"):
            raise RptError(f"chat message {i}: tool calls are not supported")
        reasoning = m.get("reasoning_content")
        if reasoning is not None and not isinstance(reasoning, str):
            raise RptError(f"chat message {i}: reasoning_content must be a string")


def render_chat(
    messages: Sequence[Mapping], add_generation_prompt: bool = True, enable_thinking: bool = True
) -> str:
    """Qwen3 chat-template text for ``messages`` (dicts: ``role``, ``content``[, ``reasoning_content``])."""
    _validate(messages)
    query = last_query_index(messages)
    parts = []
    for index, m in enumerate(messages):
        role = m["role"]
        if role == "assistant":
            is_last = index == len(messages) - 1
            parts.append(_render_assistant(m, keep_reasoning=index > query, is_last=is_last))
        else:
            parts.append(_turn(role, m["content"]))
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
        if not enable_thinking:
            parts.append(EMPTY_THINK)
    return "".join(parts)
