"""Prompt templates for RPT: how a context becomes a prompt, and how a completion becomes a prediction.

Five templates, in the registry ``TEMPLATES``:

- ``qwen3-think``: a Qwen3 chat prompt whose user turn holds the instruction and the context; the model
  reasons inside ``<think>...</think>`` and puts its prediction of the continuation in ``\\boxed{...}``
  after ``</think>`` (the RPT paper's format);
- ``answer-tags``: the same, with the prediction inside ``<answer>...</answer>``;
- ``chat-think``: the ``qwen3-think`` instruction in the *model's own* chat template (``Tokenizer.chat``:
  R1-Distill, Llama 3, SmolLM2, ...). Whether the template opens ``<think>`` itself (R1-Distill, Qwen3
  with thinking on) or the model writes it, the prediction is the last box after ``</think>``; a model that
  does not think at all is read whole;
- ``plain``: for base / tiny models: the raw context is the prompt and the prediction is the decoded text
  of the first ``answer_tokens`` generated tokens;
- ``think``: for base models that learned to reason (any tokenizer with ``<think>``/``</think>``, no chat
  format): the prompt is the context followed by ``<think>``; the model writes its thought and
  ``</think>``; the prediction is the text of the first ``answer_tokens`` tokens after ``</think>``
  (generation stops there, ``SamplingParams.stop_after``). No ``</think>`` within the token budget is a
  format failure.

``load_template(name, instruction_file, answer_tokens, chat)`` returns the registered template configured
by its own ``configure`` (each template takes the options that concern it), so callers never branch on
names. ``chat`` is the policy's chat format (``Tokenizer.chat``); without one, Qwen3's built-in format.

Every template offers the same three calls: ``render(context) -> str`` (the text given to the tokenizer),
``extract(completion_text) -> str | None`` and ``extract_ids(token_ids, decode_fn) -> str | None``
(None = nothing could be extracted, which the reward turns into the format penalty). The trainer should
call ``extract_ids`` on the completion's token ids: it is the one entry point that is right for every
template (``plain`` needs the ids to cut at a token count). ``decode_fn`` must keep ``</think>`` (in
Qwen3 it is an added but non-special token, so ``skip_special_tokens=True`` keeps it).

Extraction never strips: a leading space in the prediction is part of it (" Paris" is not "Paris").

The instructions live in the module constants below and can be replaced from a text file with
``load_template(name, instruction_file=...)``. An instruction may contain ``{context}`` (replaced by the
context, literally: no other braces are interpreted); otherwise the context follows it after a blank line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from rpt_core.runtime.errors import RptError
from rpt_core.text.chat import THINK_CLOSE, THINK_OPEN, render_chat
from rpt_core.text.chat_template import BUILTIN_QWEN3, Chat

CONTEXT_PLACEHOLDER = "{context}"
BOX_OPEN = "\\boxed{"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"

BOXED_INSTRUCTION = (
    "Predict how the text below continues. Read it carefully and reason step by step about what most "
    "likely comes next. Then, after your reasoning, give only the next few characters or words that "
    "directly follow the text, verbatim (same spelling, capitalisation, punctuation and spacing), inside "
    "\\boxed{}. Spaces matter: if the continuation starts with a space, start the box with that space, "
    "for example \\boxed{ Paris}. Do not repeat the given text. A short prediction that is exactly right "
    "is better than a long one that is partly wrong.\n\n"
    "Text:\n{context}"
)

ANSWER_TAGS_INSTRUCTION = (
    "Predict how the text below continues. Read it carefully and reason step by step about what most "
    "likely comes next. Then, after your reasoning, give only the next few characters or words that "
    "directly follow the text, verbatim (same spelling, capitalisation, punctuation and spacing), between "
    "<answer> and </answer>. Spaces matter: if the continuation starts with a space, start the answer "
    "with that space, for example <answer> Paris</answer>. Do not repeat the given text. A short "
    "prediction that is exactly right is better than a long one that is partly wrong.\n\n"
    "Text:\n{context}"
)

DecodeFn = Callable[[Sequence[int]], str]


class PromptTemplate(Protocol):
    """What the trainer needs from a template (see the module docstring)."""

    name: str
    thinks: bool
    # Generation cap the template itself implies (plain: answer_tokens); None = the trainer's own limit.
    max_new_tokens: int | None

    def render(self, context: str) -> str: ...

    def stop_after(self, token_to_id: Callable[[str], int | None]) -> tuple[int, int] | None:
        """(trigger token id, n): generation may stop n tokens after the trigger (None: no such rule)."""
        ...

    def extract(self, completion_text: str) -> str | None: ...

    def extract_ids(self, token_ids: Sequence[int], decode_fn: DecodeFn) -> str | None: ...

    def configure(
        self, instruction_file: str | Path | None, answer_tokens: int, chat: Chat | None
    ) -> PromptTemplate:
        """A copy set up with the options that concern this template (see ``load_template``)."""
        ...


# ----------------------------------------------------------------------------------------- extraction


def after_think(text: str) -> str | None:
    """The text after the last ``</think>``; None when the model never closed its reasoning."""
    i = text.rfind(THINK_CLOSE)
    return None if i < 0 else text[i + len(THINK_CLOSE) :]


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the ``}`` closing the group whose body starts at ``start`` (after its ``{``).

    LaTeX escapes are honoured: ``\\{`` and ``\\}`` are literal braces and ``\\\\`` is one escaped
    backslash, so none of them open or close a group. None when the group never closes.
    """
    depth = 1
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2  # skip the escaped character, whatever it is
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{...}`` (nested braces allowed), or None.

    None when there is no box or when the last box is unbalanced (a truncated or malformed final answer
    does not fall back to an earlier box). A box inside a box belongs to the outer one.
    """
    result: str | None = None
    i = text.find(BOX_OPEN)
    while i >= 0:
        body = i + len(BOX_OPEN)
        end = _balanced_end(text, body)
        if end is None:
            return None
        result = text[body : end - 1]
        i = text.find(BOX_OPEN, end)
    return result


def last_answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>``; None when absent or when the last one is unclosed."""
    i = text.rfind(ANSWER_OPEN)
    if i < 0:
        return None
    body = i + len(ANSWER_OPEN)
    j = text.find(ANSWER_CLOSE, body)
    return None if j < 0 else text[body:j]


# ------------------------------------------------------------------------------------------ templates


def fill_instruction(instruction: str, context: str) -> str:
    """The user turn: the instruction with ``{context}`` replaced, or the context after a blank line."""
    if CONTEXT_PLACEHOLDER in instruction:
        return instruction.replace(CONTEXT_PLACEHOLDER, context)
    return instruction.rstrip("\n") + "\n\n" + context


@dataclass(frozen=True)
class Qwen3ChatPromptTemplate:
    """A prompt template (``qwen3-think``, ``answer-tags``) in Qwen3's built-in chat format (``render_chat``),
    with a thinking phase and an answer found by ``find_answer``. Not a chat format itself: those are
    ``rpt_core.text.chat_template.Chat`` (``JinjaChat``, ``BuiltinQwen3Chat``)."""

    name: str
    instruction: str
    find_answer: Callable[[str], str | None]
    thinks: bool = True
    max_new_tokens: int | None = None

    def render(self, context: str) -> str:
        messages = [{"role": "user", "content": fill_instruction(self.instruction, context)}]
        return render_chat(messages, add_generation_prompt=True, enable_thinking=self.thinks)

    def extract(self, completion_text: str) -> str | None:
        text: str | None = completion_text
        if self.thinks:
            text = after_think(completion_text)
            if text is None:
                return None
        return self.find_answer(text)

    def extract_ids(self, token_ids: Sequence[int], decode_fn: DecodeFn) -> str | None:
        return self.extract(decode_fn(list(token_ids)))

    def stop_after(self, token_to_id: Callable[[str], int | None]) -> tuple[int, int] | None:
        return None  # the answer follows </think> in free text: generation runs to the end of the turn

    def configure(self, instruction_file, answer_tokens: int, chat: Chat | None) -> Qwen3ChatPromptTemplate:
        """Qwen3's format by definition: only the instruction can change."""
        if instruction_file is None:
            return self
        return replace(self, instruction=_read_instruction(instruction_file))


def opens_think(chat: Chat) -> bool:
    """Whether ``chat``'s generation prompt already opens the reasoning (ends with ``<think>``)."""
    probe = chat.render([{"role": "user", "content": "?"}], add_generation_prompt=True, enable_thinking=True)
    return probe.rstrip().endswith(THINK_OPEN)


@dataclass(frozen=True)
class ModelChatPromptTemplate:
    """The ``chat-think`` prompt template: the instruction in the model's own chat format (``chat``, a
    ``JinjaChat`` from its tokenizer, or Qwen3's built-in one), thinking on; the answer in the last box.

    ``prompt_opens_think`` (found once by ``configure``): the prompt ends inside ``<think>``, so a completion
    without ``</think>`` is unfinished reasoning. Otherwise the model may write ``<think>...</think>``
    itself, or answer directly; an opened but unclosed ``<think>`` is unfinished either way.
    """

    name: str = "chat-think"
    instruction: str = BOXED_INSTRUCTION
    chat: Chat = BUILTIN_QWEN3
    prompt_opens_think: bool = False
    find_answer: Callable[[str], str | None] = last_boxed
    thinks: bool = True
    max_new_tokens: int | None = None

    def render(self, context: str) -> str:
        messages = [{"role": "user", "content": fill_instruction(self.instruction, context)}]
        return self.chat.render(messages, add_generation_prompt=True, enable_thinking=True)

    def extract(self, completion_text: str) -> str | None:
        answer = after_think(completion_text)
        if answer is None:
            if self.prompt_opens_think or THINK_OPEN in completion_text:
                return None  # still reasoning when the completion ended
            answer = completion_text
        return self.find_answer(answer)

    def extract_ids(self, token_ids: Sequence[int], decode_fn: DecodeFn) -> str | None:
        return self.extract(decode_fn(list(token_ids)))

    def configure(self, instruction_file, answer_tokens: int, chat: Chat | None) -> ModelChatPromptTemplate:
        chat = chat or self.chat
        instruction = self.instruction if instruction_file is None else _read_instruction(instruction_file)
        return replace(self, instruction=instruction, chat=chat, prompt_opens_think=opens_think(chat))

    def stop_after(self, token_to_id: Callable[[str], int | None]) -> tuple[int, int] | None:
        return None  # the answer follows </think> in free text: generation runs to the end of the turn


@dataclass(frozen=True)
class PlainTemplate:
    """Raw-context prompt for base models; the prediction is the first ``answer_tokens`` tokens.

    ``extract_ids`` cuts the completion at ``answer_tokens`` ids and decodes them (a cut inside a
    multi-byte character decodes to U+FFFD, which can never match the label: the reward is 0).
    ``extract`` on text cannot count tokens, so it returns the text unchanged and is only right when the
    generation was capped at ``max_new_tokens`` (= ``answer_tokens``) tokens (in verl:
    ``data.max_response_length``).
    Both give None when nothing was generated (a completion that is only a stop token), so a text decoded
    without its stop token scores exactly like the ids it came from.
    """

    answer_tokens: int = 1
    name: str = "plain"
    thinks: bool = False

    @property
    def max_new_tokens(self) -> int | None:
        return self.answer_tokens

    def render(self, context: str) -> str:
        return context

    def extract(self, completion_text: str) -> str | None:
        return completion_text or None

    def extract_ids(self, token_ids: Sequence[int], decode_fn: DecodeFn) -> str | None:
        ids = list(token_ids)[: self.answer_tokens]
        return decode_fn(ids) if ids else None

    def stop_after(self, token_to_id: Callable[[str], int | None]) -> tuple[int, int] | None:
        return None  # capped by max_new_tokens instead

    def configure(self, instruction_file, answer_tokens: int, chat: Chat | None) -> PlainTemplate:
        if instruction_file is not None:
            raise RptError("the plain template takes no instruction (its prompt is the raw context)")
        return replace(self, answer_tokens=answer_tokens)


@dataclass(frozen=True)
class ThinkTemplate:
    """Context + ``<think>``; the prediction is the first ``answer_tokens`` tokens after ``</think>``.

    ``extract_ids`` finds the first ``</think>`` token (decoded alone) and decodes the tokens after it;
    None when there is none or nothing follows it. ``extract`` on text cannot count tokens: it returns
    the text after the first ``</think>``, right only when generation stopped ``answer_tokens`` after it.
    """

    answer_tokens: int = 1
    name: str = "think"
    thinks: bool = True
    max_new_tokens: int | None = None  # the thought's length is the trainer's budget

    def render(self, context: str) -> str:
        return context + THINK_OPEN

    def extract(self, completion_text: str) -> str | None:
        i = completion_text.find(THINK_CLOSE)
        rest = None if i < 0 else completion_text[i + len(THINK_CLOSE) :]
        return rest or None

    def extract_ids(self, token_ids: Sequence[int], decode_fn: DecodeFn) -> str | None:
        ids = list(token_ids)
        end = next((i for i, t in enumerate(ids) if decode_fn([t]) == THINK_CLOSE), None)
        answer = [] if end is None else ids[end + 1 : end + 1 + self.answer_tokens]
        return decode_fn(answer) if answer else None

    def stop_after(self, token_to_id: Callable[[str], int | None]) -> tuple[int, int] | None:
        end = token_to_id(THINK_CLOSE)
        if end is None:
            raise RptError(f"the think template needs a tokenizer with a single {THINK_CLOSE} token")
        return end, self.answer_tokens

    def configure(self, instruction_file, answer_tokens: int, chat: Chat | None) -> ThinkTemplate:
        if instruction_file is not None:
            raise RptError("the think template takes no instruction (its prompt is the raw context)")
        return replace(self, answer_tokens=answer_tokens)


TEMPLATES: dict[str, PromptTemplate] = {
    "qwen3-think": Qwen3ChatPromptTemplate(
        name="qwen3-think", instruction=BOXED_INSTRUCTION, find_answer=last_boxed
    ),
    "answer-tags": Qwen3ChatPromptTemplate(
        name="answer-tags", instruction=ANSWER_TAGS_INSTRUCTION, find_answer=last_answer_tag
    ),
    "chat-think": ModelChatPromptTemplate(),
    "plain": PlainTemplate(),
    "think": ThinkTemplate(),
}


def _read_instruction(path: str | Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RptError(f"cannot read instruction file {path}: {e}") from None
    if not text.strip():
        raise RptError(f"instruction file {path} is empty")
    return text


def load_template(
    name: str,
    instruction_file: str | Path | None = None,
    answer_tokens: int = 1,
    chat: Chat | None = None,
) -> PromptTemplate:
    """The template registered as ``name``, configured for this run.

    ``instruction_file`` replaces the instruction (UTF-8 text; ``plain`` has none, so giving it one is an
    error rather than silently ignored); ``answer_tokens`` (>= 1) only matters for ``plain``; ``chat`` (the
    policy's ``Tokenizer.chat``) only for ``chat-think``.
    """
    if name not in TEMPLATES:
        raise RptError(f"unknown prompt template {name!r}; valid templates: {', '.join(sorted(TEMPLATES))}")
    if answer_tokens < 1:
        raise RptError(f"answer_tokens must be >= 1, got {answer_tokens}")
    return TEMPLATES[name].configure(instruction_file, answer_tokens, chat)
