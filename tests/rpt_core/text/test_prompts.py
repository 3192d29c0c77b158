"""Prompt templates: rendering through the Qwen3 chat format or the model's own template, and prediction
extraction."""

from __future__ import annotations

import pytest

from rpt_core.runtime.errors import RptError
from rpt_core.text.chat import render_chat
from rpt_core.text.chat_template import JinjaChat
from rpt_core.text.prompts import (
    ANSWER_TAGS_INSTRUCTION,
    BOXED_INSTRUCTION,
    TEMPLATES,
    PlainTemplate,
    last_answer_tag,
    last_boxed,
    load_template,
)
from rpt_core.text.tokenizer import Tokenizer
from tests.rpt_core.text.test_chat import QWEN_DIR

IM_START, THINK_END = 151644, 151668


@pytest.fixture(scope="module")
def tok(qwen3_raw_tokenizer):
    return qwen3_raw_tokenizer


def test_registry_and_flags():
    assert set(TEMPLATES) == {"qwen3-think", "answer-tags", "chat-think", "plain", "think"}
    assert all(TEMPLATES[name].thinks for name in ("qwen3-think", "answer-tags", "chat-think", "think"))
    assert not TEMPLATES["plain"].thinks
    assert "\\boxed{}" in BOXED_INSTRUCTION and "<answer>" in ANSWER_TAGS_INSTRUCTION
    for text in (BOXED_INSTRUCTION, ANSWER_TAGS_INSTRUCTION):
        assert "verbatim" in text and "Spaces matter" in text and "{context}" in text


# ----------------------------------------------------------------------------------------- rendering


def test_qwen3_render_is_one_user_turn_with_the_context(tok):
    context = "The capital of France is"
    prompt = load_template("qwen3-think").render(context)
    user = BOXED_INSTRUCTION.replace("{context}", context)
    assert prompt == f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    assert prompt == render_chat([{"role": "user", "content": user}], add_generation_prompt=True)
    # The context closes the user turn verbatim, so the model sees where the text stops.
    assert prompt.endswith(context + "<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode(prompt).ids
    assert ids[0] == IM_START and ids.count(IM_START) == 2


def test_render_keeps_trailing_space_and_braces_in_context():
    context = "f(x) = {a} + {context} costs "
    prompt = TEMPLATES["answer-tags"].render(context)
    assert context + "<|im_end|>" in prompt
    assert ANSWER_TAGS_INSTRUCTION.split("{context}")[0] in prompt


def test_instruction_file_with_and_without_placeholder(tmp_path):
    with_ph = tmp_path / "a.txt"
    with_ph.write_text("Continue <<{context}>> please, in \\boxed{}.", encoding="utf-8")
    prompt = load_template("qwen3-think", instruction_file=with_ph).render("abc ")
    assert "<|im_start|>user\nContinue <<abc >> please, in \\boxed{}.<|im_end|>" in prompt
    without = tmp_path / "b.txt"
    without.write_text("Say what comes next.\n", encoding="utf-8")
    prompt = load_template("answer-tags", instruction_file=str(without)).render("abc")
    assert "<|im_start|>user\nSay what comes next.\n\nabc<|im_end|>" in prompt
    # the registry's template is untouched
    assert TEMPLATES["qwen3-think"].instruction == BOXED_INSTRUCTION


def test_load_template_errors(tmp_path):
    with pytest.raises(RptError, match="answer-tags, chat-think, plain, qwen3-think"):
        load_template("chatml")
    with pytest.raises(RptError, match="plain"):
        load_template("plain", instruction_file=tmp_path / "x.txt")
    with pytest.raises(RptError, match="answer_tokens"):
        load_template("plain", answer_tokens=0)
    with pytest.raises(RptError, match="cannot read"):
        load_template("qwen3-think", instruction_file=tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(RptError, match="empty"):
        load_template("qwen3-think", instruction_file=empty)


# ----------------------------------------------------------------------------------------- extraction


def test_boxed_last_box_wins_and_think_is_skipped():
    t = TEMPLATES["qwen3-think"]
    text = "<think>maybe \\boxed{ Lyon}</think>So: \\boxed{ Paris} or rather \\boxed{ Paris.}"
    assert t.extract(text) == " Paris."
    assert t.extract("<think>\\boxed{ Paris}</think>no box here") is None
    # only the text after the LAST </think> counts
    assert t.extract("<think>a</think>\\boxed{x}</think>\\boxed{y}") == "y"


def test_boxed_nesting_escapes_and_unbalanced():
    t = TEMPLATES["qwen3-think"]
    assert t.extract("</think>\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert t.extract("</think>\\boxed{ {a{b}c} }.") == " {a{b}c} "
    assert t.extract("</think>\\boxed{\\frac{1}{2}") is None  # unbalanced
    assert t.extract("</think>\\boxed{a} then \\boxed{b") is None  # no fallback to an earlier box
    assert t.extract("</think>\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"  # escaped braces are literal
    assert t.extract("</think>\\boxed{a\\}") is None
    assert t.extract("</think>\\boxed{\\boxed{x}}") == "\\boxed{x}"  # the outer box is the answer
    assert t.extract("</think>\\boxed{}") == ""
    assert last_boxed("no box") is None


def test_no_think_end_means_no_prediction():
    assert TEMPLATES["qwen3-think"].extract("<think>still thinking \\boxed{ Paris}") is None
    assert TEMPLATES["answer-tags"].extract("<answer> Paris</answer>") is None


def test_spaces_are_preserved():
    t = TEMPLATES["qwen3-think"]
    assert t.extract("<think>\nhmm\n</think>\n\n\\boxed{ costs }\n") == " costs "
    assert t.extract("</think>\\boxed{  }") == "  "
    assert TEMPLATES["answer-tags"].extract("</think><answer>\n5 </answer>") == "\n5 "


def test_answer_tags():
    t = TEMPLATES["answer-tags"]
    text = "<think><answer>x</answer></think> <answer> Paris</answer> then <answer> London</answer>"
    assert t.extract(text) == " London"
    assert t.extract("</think><answer> Paris</answer><answer> Lon") is None  # last one unclosed
    assert t.extract("</think>Paris") is None
    assert last_answer_tag("<answer></answer>") == ""


def test_chat_extract_ids_with_real_tokenizer(tok):
    completion = "<think>\nThe capital is Paris.\n</think>\n\n\\boxed{ Paris}<|im_end|>"
    ids = tok.encode(completion).ids
    assert THINK_END in ids

    def decode(x):
        return tok.decode(x, skip_special_tokens=True)

    assert "</think>" in decode(ids)  # </think> is not special: the decode keeps it
    assert TEMPLATES["qwen3-think"].extract_ids(ids, decode) == " Paris"


def test_plain_template_on_ids(tok):
    ids = tok.encode(" Paris. $x^2").ids  # " Paris", ".", " $", "x", "^", "2"

    def decode(x):
        return tok.decode(x)

    one = load_template("plain")
    assert isinstance(one, PlainTemplate) and one.max_new_tokens == 1
    assert one.render("The capital of France is") == "The capital of France is"
    assert one.extract_ids(ids, decode) == " Paris"
    three = load_template("plain", answer_tokens=3)
    assert three.extract_ids(ids, decode) == " Paris. $"
    assert three.extract_ids(ids[:2], decode) == " Paris."  # fewer tokens than asked: use them all
    assert three.extract_ids([], decode) is None
    assert three.extract(" Paris") == " Paris"
    assert three.extract("") is None  # nothing generated (a text decoded without its stop token), as with ids
    assert TEMPLATES["plain"].answer_tokens == 1  # load_template did not mutate the registry


def test_think_template_on_ids(tok):
    ids = tok.encode("3+4+0=7 so 7</think> 7 apples").ids
    decode = tok.decode
    one = load_template("think")
    assert one.render("so $3 + 4 = ") == "so $3 + 4 = <think>"
    assert one.stop_after(tok.token_to_id) == (THINK_END, 1)
    assert one.extract_ids(ids, decode) == " "  # a space before a digit is its own token
    two = load_template("think", answer_tokens=2)
    assert two.stop_after(tok.token_to_id) == (THINK_END, 2)
    assert two.extract_ids(ids, decode) == " 7"
    assert one.extract_ids(tok.encode("3+4=7 so 7").ids, decode) is None  # never closed its thought
    assert one.extract_ids(tok.encode("7</think>").ids, decode) is None  # closed, but nothing after it
    assert one.extract("a</think>b") == "b" and one.extract("ab") is None
    with pytest.raises(RptError, match="no instruction"):
        load_template("think", instruction_file="x.txt")


# ------------------------------------------------------------------------------------------ chat-think

# An R1-Distill-style template (written for this test): the generation prompt opens the reasoning itself.
OPENS_THINK = JinjaChat(
    "{{ bos_token }}{% for m in messages %}<|User|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}",
    {"bos_token": "<|begin|>"},
)
# A ChatML template without any thinking (SmolLM2-like).
NO_THINK = JinjaChat(
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_chat_think_renders_the_instruction_in_the_models_template():
    template = load_template("chat-think", chat=NO_THINK)
    user = BOXED_INSTRUCTION.replace("{context}", "The capital of France is")
    prompt = template.render("The capital of France is")
    assert prompt == f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    assert not template.prompt_opens_think
    opened = load_template("chat-think", chat=OPENS_THINK)
    assert opened.prompt_opens_think
    assert (
        opened.render("abc")
        == f"<|begin|><|User|>{BOXED_INSTRUCTION.replace('{context}', 'abc')}<|Assistant|><think>\n"
    )


def test_chat_think_with_qwen3s_own_template_is_qwen3_think(tmp_path):
    qwen = Tokenizer.load(QWEN_DIR)
    template = load_template("chat-think", chat=qwen.chat)
    assert isinstance(qwen.chat, JinjaChat) and not template.prompt_opens_think  # Qwen3: the model opens it
    assert template.render("x = ") == load_template("qwen3-think").render("x = ")
    # without a chat format: Qwen3's built-in one; an instruction file works as for the other templates
    instruction = tmp_path / "i.txt"
    instruction.write_text("Next words of {context} in \\boxed{}.", encoding="utf-8")
    default = load_template("chat-think", instruction_file=instruction)
    assert default.render("x") == load_template("qwen3-think", instruction_file=instruction).render("x")


def test_chat_think_extraction_when_the_prompt_opened_think():
    t = load_template("chat-think", chat=OPENS_THINK)
    assert t.extract("reasoning \\boxed{ no}\n</think>\n\n\\boxed{ Paris}") == " Paris"
    assert t.extract("still reasoning \\boxed{ Paris}") is None  # never closed: no answer yet
    assert t.extract("</think>no box") is None


def test_chat_think_extraction_when_the_model_writes_think_or_not():
    t = load_template("chat-think", chat=NO_THINK)
    assert t.extract("<think>\nmaybe \\boxed{ Lyon}\n</think>\n\n\\boxed{ Paris}") == " Paris"
    assert t.extract("<think>still \\boxed{ Lyon}") is None  # opened, never closed
    assert t.extract("It is \\boxed{ Paris}.") == " Paris"  # no reasoning at all: the whole answer


def test_chat_think_on_ids_keeps_think_tags(tok):
    t = load_template("chat-think", chat=Tokenizer.load(QWEN_DIR).chat)
    ids = tok.encode("<think>\nhmm\n</think>\n\n\\boxed{ Paris}<|im_end|>").ids
    assert t.extract_ids(ids, lambda x: tok.decode(x, skip_special_tokens=True)) == " Paris"
