"""The model's own chat template (``rpt_core.text.chat_template``, ``Tokenizer.chat``) renders exactly what
transformers' ``apply_chat_template(tokenize=False)`` renders: Qwen3's official template, a SmolLM2-style
ChatML template and a template that uses every sandbox feature, over a set of conversations and flags.
Also: where the template is read from, the errors it raises, and what travels with a saved tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers

from rpt_core.runtime.errors import RptError
from rpt_core.text.chat_template import BUILTIN_QWEN3, ChatSpec, JinjaChat, read_chat_spec
from rpt_core.text.tokenizer import Tokenizer
from tests.rpt_core.text.test_chat import CONVERSATIONS, QWEN_DIR

SMOLLM2_STYLE = Path(__file__).resolve().parent / "fixtures" / "smollm2-style"
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
FLAGS = [(True, True), (True, False), (False, True), (False, False)]

# Every feature transformers gives a template: special-token variables, namespace, loop controls, the
# generation block, raise_exception, tojson (with its keyword arguments), dict and strftime_now.
FEATURES_TEMPLATE = """{{ bos_token }}{% set ns = namespace(turns=0) %}
{% for m in messages %}
    {% if m['role'] == 'tool' %}{{ raise_exception('tool turns are not supported') }}{% endif %}
    {% if m['role'] == 'system' %}{% continue %}{% endif %}
    {% set ns.turns = ns.turns + 1 %}
    {% generation %}{{ m['role'] }}: {{ m['content'] }}{% endgeneration %}
    {% if m.reasoning_content is defined %} [{{ m.thinking }}|{{ m.reasoning_content }}]{% endif %}

    {% if ns.turns >= 3 %}{% break %}{% endif %}
{% endfor %}
{{ messages | tojson }}
{{ {'b': '<&> é', 'a': [1, 2]} | tojson(sort_keys=True, indent=1) }}{{ dict(x=1) | tojson }}
{{ strftime_now('%Y') }} {{ enable_thinking }}{% if add_generation_prompt %}{{ eos_token }}{% endif %}
"""


def write_tokenizer_dir(path: Path, config: dict, specials: list[str] = CHATML_SPECIALS) -> Path:
    """``tokenizer.json`` (a tiny byte-level BPE with ``specials`` at ids 0..) + ``tokenizer_config.json``."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in "ĠĊabcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def smollm2_dir(tmp_path: Path) -> Path:
    config = json.loads((SMOLLM2_STYLE / "tokenizer_config.json").read_text(encoding="utf-8"))
    return write_tokenizer_dir(tmp_path / "smollm2", config)


def features_dir(tmp_path: Path) -> Path:
    eos = {
        "__type": "AddedToken",
        "content": "<|im_end|>",
        "special": True,
    }  # as R1-Distill writes its tokens
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": eos,
        "chat_template": FEATURES_TEMPLATE,
    }
    return write_tokenizer_dir(tmp_path / "features", config)


def assert_renders_like_transformers(directory: Path, conversations: dict[str, list[dict]]) -> None:
    ours = Tokenizer.load(directory).chat
    theirs = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert isinstance(ours, JinjaChat)
    for name, messages in conversations.items():
        for generation, thinking in FLAGS:
            expected = theirs.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation, enable_thinking=thinking
            )
            got = ours.render(messages, add_generation_prompt=generation, enable_thinking=thinking)
            assert got == expected, (name, generation, thinking)


def test_qwen3_official_template_matches_transformers():
    assert_renders_like_transformers(QWEN_DIR, CONVERSATIONS)


def test_qwen3_template_equals_the_builtin_renderer():
    ours = Tokenizer.load(QWEN_DIR).chat
    for messages in CONVERSATIONS.values():
        for generation, thinking in FLAGS:
            assert ours.render(messages, generation, thinking) == BUILTIN_QWEN3.render(
                messages, generation, thinking
            )


def test_smollm2_style_template_matches_transformers(tmp_path):
    directory = smollm2_dir(tmp_path)
    assert_renders_like_transformers(directory, CONVERSATIONS)
    text = Tokenizer.load(directory).chat.render([{"role": "user", "content": "Hi"}])
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )  # trim_blocks / lstrip_blocks removed the template's own newlines and indentation


def test_every_sandbox_feature_matches_transformers(tmp_path):
    conversations = {k: v for k, v in CONVERSATIONS.items() if k != "tool-response-user-is-not-a-query"}
    assert_renders_like_transformers(features_dir(tmp_path), conversations)
    text = Tokenizer.load(features_dir(tmp_path)).chat.render(CONVERSATIONS["user"])
    assert text.startswith("<|endoftext|>user: What is 2+2?") and text.endswith("True<|im_end|>")
    assert '"<&> é"' in text  # tojson does not HTML-escape


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ raise_exception('no tools here') }}", "no tools here"),
        ("{% for m in messages %}", "does not compile"),
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{% set x = [] %}{{ x.append(1) }}", "unsafe"),  # the sandbox is immutable
        ("{% set ns = namespace(_private=1) %}", "underscore"),
        ("{{ messages[0].content.nope.deeper }}", "has no attribute 'nope'"),
    ],
    ids=["raise_exception", "syntax", "dunder", "mutation", "namespace-underscore", "undefined"],
)
def test_template_errors_are_one_line_rpt_errors(template, message):
    with pytest.raises(RptError, match=message) as info:
        JinjaChat(template, source="t").render([{"role": "user", "content": "x"}])
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ the files


def test_chat_template_jinja_wins_and_special_tokens_are_read(tmp_path):
    directory = smollm2_dir(tmp_path)
    spec = read_chat_spec(directory)
    assert spec.special_tokens == {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
    }
    (directory / "chat_template.jinja").write_text("{{ bos_token }}{{ messages[0]['content'] }}")
    assert Tokenizer.load(directory).chat.render([{"role": "user", "content": "x"}]) == "<|im_start|>x"
    theirs = transformers.AutoTokenizer.from_pretrained(str(directory))  # the same priority there
    assert theirs.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "<|im_start|>x"


def test_named_templates_and_legacy_special_tokens_map(tmp_path):
    config = {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}
    directory = write_tokenizer_dir(tmp_path / "named", config)
    (directory / "special_tokens_map.json").write_text(json.dumps({"eos_token": {"content": "<|im_end|>"}}))
    spec = read_chat_spec(directory)
    assert spec.template == "D" and spec.special_tokens == {"eos_token": "<|im_end|>"}
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": [{"name": "x", "template": ""}]})
    )
    with pytest.raises(RptError, match="none named 'default'"):
        read_chat_spec(directory)


def test_no_template_falls_back_to_qwen3(tmp_path):
    directory = tmp_path / "bare"
    directory.mkdir()
    shutil.copyfile(QWEN_DIR / "tokenizer.json", directory / "tokenizer.json")
    tok = Tokenizer.load(directory)
    assert tok.chat is BUILTIN_QWEN3 and tok.chat_spec == ChatSpec(source=str(directory))


def test_declared_eos_token_stops_generation(tmp_path):
    specials = ["<|begin_of_sentence|>", "<|end_of_sentence|>", "<|User|>", "<|Assistant|>"]
    config = {"bos_token": "<|begin_of_sentence|>", "eos_token": "<|end_of_sentence|>"}
    tok = Tokenizer.load(write_tokenizer_dir(tmp_path / "r1", config, specials))
    assert tok.stop_ids == (1,)  # no <|im_end|> / <|endoftext|> here: only the declared EOS
    qwen = Tokenizer.load(QWEN_DIR)
    assert qwen.stop_ids == (151645, 151643)  # <|im_end|> (also the declared EOS), <|endoftext|>


def test_eos_id_falls_back_to_the_declared_eos_token(tmp_path):
    """A Llama-3 or R1-Distill tokenizer has neither Qwen end token; ``rpt-train pretrain`` needs its EOS."""
    specials = ["<|begin_of_sentence|>", "<|end_of_sentence|>"]
    config = {"bos_token": "<|begin_of_sentence|>", "eos_token": "<|end_of_sentence|>"}
    assert Tokenizer.load(write_tokenizer_dir(tmp_path / "r1", config, specials)).eos_id == 1
    bare = Tokenizer.load(write_tokenizer_dir(tmp_path / "bare", {}, specials))
    with pytest.raises(RptError, match="no EOS token"):
        _ = bare.eos_id


def test_saved_tokenizer_keeps_its_template_for_us_and_transformers(tmp_path):
    tok = Tokenizer.load(smollm2_dir(tmp_path))
    tok.save(tmp_path / "saved")
    again = Tokenizer.load(tmp_path / "saved")
    messages = CONVERSATIONS["multi-turn"]
    assert again.chat.render(messages) == tok.chat.render(messages)
    assert again.chat_spec.special_tokens == tok.chat_spec.special_tokens
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    assert theirs.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    ) == tok.chat.render(messages)
