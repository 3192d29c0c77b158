"""Typed configuration, the one mechanism every command uses.

A command's settings are one dataclass whose fields are declared with ``option(default, help, ...)``:
the help text, the allowed values (``choices``) and bounds (``ge``, ``gt``, ``le``, ``lt``) live on the
field, ``check(cfg)`` (called from ``__post_init__``) enforces them with one-line errors, and
``rpt_core.runtime.cli.config_command`` generates the command's click options from the same fields.
Values are layered by ``build_config``: dataclass defaults < TOML recipe (``[section]`` of
``--config FILE``) < options typed on the command line, so a recipe is never silently replaced by click
defaults. A recipe's tables must be among ``RECIPE_TABLES`` and its values of the field's type (an int is
not a bool, a string is not a number): a typo is refused with one line, never ignored. The resolved config
is serialised with ``config_to_dict`` and written beside every output.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from rpt_core.runtime.errors import RptError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

# Every table a recipe may hold: one per command section (``config_command(cls, section)`` adds its own, so
# a command defined elsewhere is known too). A table not listed is a typo ([trian]) whose settings would
# otherwise be silently replaced by the defaults. Listed here, not only registered, because the CLIs import
# their commands lazily: `rpt-train run` must know [eval] without importing the evaluator.
RECIPE_TABLES = {
    "convert",
    "data",
    "eval",
    "export",
    "generate",
    "inspect",
    "passrate",
    "pretrain",
    "tokenizer",
    "train",
}

_BOUNDS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    choices: Any = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    **cli: Any,
) -> Any:
    """A config field with its help text and constraints (see the module docstring).

    ``choices`` is a collection of allowed values (a registry dict works: its keys). Bounds apply to
    numbers and skip ``None``. ``cli`` keys shape the generated click parameter: ``flag`` (the option
    name, default ``--field-name``), ``argument`` (a positional argument), ``callback``, ``hidden``.
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata = {"help": help, "choices": choices, "bounds": bounds, "cli": cli}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def unescape(ctx: Any, param: Any, value: str | None) -> str | None:
    """A click callback for text-template options: shells pass ``\\n`` literally, and in a text template it
    almost always means a newline (``--text-template '{problem}\\n\\n{solution}'``)."""
    return value.replace("\\n", "\n").replace("\\t", "\t") if value is not None else None


def check(cfg: Any) -> None:
    """Enforce every field's ``choices`` and bounds; the first violation is one ``RptError`` line."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        name = f.name.replace("_", "-")
        choices = f.metadata.get("choices")
        if choices is not None:
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if v is not None and v not in choices:
                    raise RptError(f"{name} must be one of {', '.join(map(str, choices))}, got {v!r}")
        for kind, bound in (f.metadata.get("bounds") or {}).items():
            ok, word = _BOUNDS[kind]
            if value is not None and not ok(value, bound):
                raise RptError(f"{name} must be {word} {bound}, got {value!r}")


def load_toml_section(path: str | Path, section: str) -> dict[str, Any]:
    """Return ``[section]`` of a TOML file (empty dict when the section is absent)."""
    path = Path(path)
    if not path.is_file():
        raise RptError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RptError(f"{path}: invalid TOML: {e}") from None
    check_tables(path, data)
    value = data.get(section, {})
    if not isinstance(value, dict):
        raise RptError(f"{path}: [{section}] must be a table")
    return value


def check_tables(path: Path, data: dict[str, Any]) -> None:
    """Refuse a top-level key of a recipe that is not a known table, naming the closest known one."""
    for key in data:
        if key not in RECIPE_TABLES:
            known = sorted(RECIPE_TABLES)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else f" (known: {', '.join(known)})"
            raise RptError(f"{path}: unknown table [{key}]{hint}")


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string"}


def _coerce(name: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0]) if len(inner) == 1 else value
    if tp is Any:
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise RptError(f"config key '{name}' must be a list, got {value!r}")
        item = args[0] if args else Any
        out = [_coerce(name, v, item) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RptError(f"config key '{name}' must be true or false, got {value!r}")
    # Strict: a bool is an int in Python and "60" parses as one, but in a recipe both are mistakes.
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    if tp in (int, float, str):
        raise RptError(f"config key '{name}' must be {_TYPE_WORDS[tp]}, got {value!r}")
    return value


def build_config(cls: type[T], *layers: dict[str, Any] | None) -> T:
    """Instantiate dataclass ``cls`` from ``layers`` of overrides applied left to right.

    Keys use the dataclass field names; dashes are accepted in place of underscores. Unknown keys are
    an error (a typo in a recipe must not be ignored).
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            field = key.replace("-", "_")
            if field not in names:
                raise RptError(
                    f"unknown config key '{key}' for {cls.__name__} (known: {', '.join(sorted(names))})"
                )
            values[field] = _coerce(field, value, hints[field])
    try:
        cfg = cls(**values)
    except (TypeError, ValueError) as e:
        raise RptError(str(e)) from None
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/TOML-friendly dict of a (possibly nested) dataclass; paths become strings."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)
