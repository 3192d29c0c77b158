"""rpt_core.text.chat.render_chat must equal the official Qwen3 chat template as rendered by transformers."""

from __future__ import annotations

import json

import pytest

from rpt_core.runtime.errors import RptError
from rpt_core.text.chat import render_chat, split_reasoning
from tests.conftest import QWEN3_DIR

QWEN_DIR = QWEN3_DIR

SYS = {"role": "system", "content": "You are a careful mathematician."}
Q1 = {"role": "user", "content": "What is 2+2?"}
Q2 = {"role": "user", "content": "And 3*3?\nShow work."}
A_PLAIN = {"role": "assistant", "content": "4"}
A_THINK = {"role": "assistant", "content": "<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4."}
A_REASONING = {"role": "assistant", "content": "\n\n9", "reasoning_content": "\n3 times 3 is 9.\n\n"}
A_EMPTY_REASONING = {"role": "assistant", "content": "Sure.", "reasoning_content": ""}
A_CLOSE_ONLY = {"role": "assistant", "content": "thinking...\n</think>\n\nDone."}
A_TWO_CLOSES = {"role": "assistant", "content": "<think>a</think>b</think>\nc"}
TOOL_RESULT = {"role": "user", "content": "<tool_response>\n42\n</tool_response>"}

CONVERSATIONS = {
    "system+user": [SYS, Q1],
    "user": [Q1],
    "multi-turn": [SYS, Q1, A_PLAIN, Q2],
    "history-think-stripped": [Q1, A_THINK, Q2],
    "last-assistant-think": [SYS, Q1, A_THINK],
    "last-assistant-reasoning-field": [Q1, A_REASONING],
    "last-assistant-no-reasoning": [Q1, A_PLAIN],
    "empty-reasoning-field": [Q1, A_EMPTY_REASONING, Q2, A_EMPTY_REASONING],
    "several-assistants-after-query": [Q1, A_REASONING, A_PLAIN, A_THINK],
    "close-tag-only": [Q1, A_CLOSE_ONLY],
    "two-close-tags": [Q1, A_TWO_CLOSES],
    "system-mid-conversation": [Q1, A_PLAIN, {"role": "system", "content": "Be brief."}, Q2],
    "tool-response-user-is-not-a-query": [Q1, A_THINK, TOOL_RESULT, A_REASONING],
    "no-user": [SYS, A_THINK],
}


@pytest.fixture(scope="module")
def hf_tokenizer():
    import transformers

    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(QWEN_DIR / "tokenizer.json"))
    config = json.loads((QWEN_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok.chat_template = config["chat_template"]
    return tok


@pytest.mark.parametrize("enable_thinking", [True, False], ids=["think", "nothink"])
@pytest.mark.parametrize("add_generation_prompt", [True, False], ids=["gen", "nogen"])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_matches_official_template(hf_tokenizer, name, add_generation_prompt, enable_thinking):
    messages = CONVERSATIONS[name]
    expected = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking
    )
    ours = render_chat(messages, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking)
    assert ours == expected


def test_known_rendering_by_hand():
    # Written out by hand so the format is pinned even where transformers is not installed.
    assert render_chat([SYS, Q1], enable_thinking=False) == (
        "<|im_start|>system\nYou are a careful mathematician.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert render_chat([Q1, A_THINK], add_generation_prompt=False) == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4.<|im_end|>\n"
    )


def test_split_reasoning():
    assert split_reasoning(A_THINK) == ("2 plus 2 is 4.", "The answer is 4.")
    assert split_reasoning(A_PLAIN) == ("", "4")
    assert split_reasoning(A_REASONING) == ("\n3 times 3 is 9.\n\n", "\n\n9")  # stripped when rendered


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "tool", "content": "x"}],
        [{"role": "user", "content": None}],
        [Q1, {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {}}]}],
    ],
    ids=["empty", "tool-role", "non-string", "tool-calls"],
)
def test_unsupported_input_is_rpt_error(messages):
    with pytest.raises(RptError):
        render_chat(messages)
