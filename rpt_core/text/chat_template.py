"""The model's own chat template: found beside its ``tokenizer.json``, rendered with jinja2 the way the
Hugging Face ecosystem renders it.

A model directory says how its conversations look in ``tokenizer_config.json`` (``chat_template`` and the
named special tokens ``bos_token``, ``eos_token``, ...) or in ``chat_template.jinja``, which takes priority.
``read_chat_spec`` reads those files; ``ChatSpec.renderer()`` gives the one object prompts call:
``render(messages, add_generation_prompt=True, enable_thinking=True) -> str``.

The template is untrusted code from the hub, so it runs in jinja2's ``ImmutableSandboxedEnvironment`` with
what transformers' ``apply_chat_template`` offers it and nothing else: ``trim_blocks`` / ``lstrip_blocks``,
the ``loopcontrols`` extension, a ``{% generation %}`` block that renders its body, the globals
``raise_exception``, ``strftime_now``, ``dict`` and ``namespace`` (no underscore names), a ``tojson``
filter without HTML escaping, and the named special tokens as variables. Messages are passed as
transformers passes them: keys whose value is None dropped, and the reasoning of an assistant turn offered
under both ``reasoning_content`` and ``thinking``. A tokenizer without a template falls back to Qwen3's
format (``rpt_core.text.chat.render_chat``).

Template errors (``raise_exception``, syntax, sandbox violations) become one-line ``RptError``s.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox
import jinja2.utils

from rpt_core.runtime.errors import RptError, first_line
from rpt_core.text.chat import render_chat

CHAT_TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"  # legacy: fills names tokenizer_config.json lacks
SIDECAR_FILES = (TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, SPECIAL_TOKENS_MAP_FILE)
# transformers' named special tokens, passed to every template as variables when the files name them.
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class Chat(Protocol):
    """What prompts need from a chat format."""

    name: str

    def render(
        self, messages: Sequence[Mapping], add_generation_prompt: bool = True, enable_thinking: bool = True
    ) -> str: ...


@dataclass(frozen=True)
class BuiltinQwen3Chat:
    """Qwen3's format in plain Python: the fallback for a tokenizer that ships no template."""

    name: str = "qwen3 (built-in)"

    def render(
        self, messages: Sequence[Mapping], add_generation_prompt: bool = True, enable_thinking: bool = True
    ) -> str:
        return render_chat(messages, add_generation_prompt, enable_thinking)


BUILTIN_QWEN3 = BuiltinQwen3Chat()


# -------------------------------------------------------------------------------------- the sandbox


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; we render the body.

    A call block, so that like in transformers a ``set`` inside it does not leak out.
    """

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore attribute names (a way into Python internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 (jinja's own signature trick)
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} starts with an underscore")


class _DictFactory:
    """``dict(...)`` and ``dict.fromkeys(...)`` for templates, without handing them the ``dict`` type."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    """JSON as ``json.dumps`` writes it (jinja's own filter would HTML-escape ``<``, ``>``, ``&``)."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _DictFactory()
    env.globals["namespace"] = _Namespace
    return env


def _messages_for_template(messages: Sequence[Mapping]) -> list[dict]:
    """Plain dicts as transformers hands them over: None values dropped, reasoning under both names."""
    out = []
    for message in messages:
        m = {k: v for k, v in dict(message).items() if v is not None}
        reasoning = next((m[k] for k in REASONING_FIELDS if k in m), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


class JinjaChat:
    """A chat format (``Chat``) from a model's Jinja chat template, compiled once in the sandbox and rendered
    with the tokenizer's named special tokens."""

    def __init__(self, template: str, special_tokens: Mapping[str, str] | None = None, source: str = ""):
        self.name = f"chat template of {source}" if source else "chat template"
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        try:
            self._compiled = environment().from_string(template)
        except jinja2.exceptions.TemplateError as exc:
            raise RptError(f"{self.name} does not compile: {first_line(exc)}") from None

    def render(
        self, messages: Sequence[Mapping], add_generation_prompt: bool = True, enable_thinking: bool = True
    ) -> str:
        if not messages:
            raise RptError("chat has no messages")
        variables = {**self.special_tokens, "enable_thinking": enable_thinking}
        try:
            return self._compiled.render(
                messages=_messages_for_template(messages),
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except jinja2.exceptions.TemplateError as exc:
            raise RptError(f"{self.name}: {first_line(exc)}") from None


# -------------------------------------------------------------------------------------- the files


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RptError(f"cannot read {path}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise RptError(f"{path}: expected a JSON object")
    return data


def _default_template(value: Any, path: Path) -> str | None:
    """``chat_template`` as a string, or the one named ``default`` of a list of named templates."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, Mapping)}
        if isinstance(named.get("default"), str):
            return named["default"]
        raise RptError(f"{path}: several chat templates and none named 'default' ({sorted(map(str, named))})")
    raise RptError(f"{path}: chat_template must be a string or a list of named templates")


@dataclass(frozen=True)
class ChatSpec:
    """What a tokenizer directory says about chat: its template (None: none shipped) and special tokens."""

    template: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def renderer(self) -> Chat:
        if self.template is None:
            return BUILTIN_QWEN3
        return JinjaChat(self.template, self.special_tokens, self.source)


def read_chat_spec(directory: str | Path) -> ChatSpec:
    """The chat template and named special tokens in ``directory`` (files absent: an empty spec)."""
    directory = Path(directory)
    config_file, jinja_file = directory / TOKENIZER_CONFIG_FILE, directory / CHAT_TEMPLATE_FILE
    config = _read_json(config_file) if config_file.is_file() else {}
    legacy_file = directory / SPECIAL_TOKENS_MAP_FILE
    legacy = _read_json(legacy_file) if legacy_file.is_file() else {}
    tokens = {}
    for name in SPECIAL_TOKEN_NAMES:
        text = _token_text(config[name]) if name in config else _token_text(legacy.get(name))
        if text is not None:
            tokens[name] = text
    template = _default_template(config.get("chat_template"), config_file)
    source = config_file
    if jinja_file.is_file():  # a separate template file wins, as in transformers
        try:
            template, source = jinja_file.read_text(encoding="utf-8"), jinja_file
        except (OSError, UnicodeDecodeError) as exc:
            raise RptError(f"cannot read {jinja_file}: {first_line(exc)}") from None
    return ChatSpec(template, tokens, str(source if template is not None else directory))
