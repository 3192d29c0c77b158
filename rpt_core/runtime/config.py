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

Sections: a field whose value is itself a dataclass (declared with ``section(Cls)``) groups options, as
``TrainConfig.optim`` holds ``lr``. Everything outside Python sees them flat: the click options, a recipe's
keys, ``config_to_dict`` and ``build_config`` / ``from_flat`` all use the leaves' own names (``--lr``,
``lr = 1e-6``, ``"lr": 1e-06``), so a leaf's name is unique across a config's sections (``flat_fields``
asserts it).

Markers: a field says two facts about itself, read back by small functions here rather than kept in lists
elsewhere. ``resumable=True``: a resumed run may change it (``resumable_fields``; why, in the module that
declares the config). ``identity=False``: it does not change what the command produces (where the output
goes, chattiness), so it is left out of the output's identity (``identity_dict``: a build's resume key, the
evaluator's cache key). They are different facts: ``max_steps`` may change on a resume, yet a run of more
steps is another output.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
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
    resumable: bool = False,
    identity: bool = True,
    **cli: Any,
) -> Any:
    """A config field with its help text and constraints (see the module docstring).

    ``choices`` is a collection of allowed values (a registry dict works: its keys). Bounds apply to
    numbers and skip ``None``. ``resumable`` and ``identity`` are the field's markers (module docstring).
    ``cli`` keys shape the generated click parameter: ``flag`` (the option name, default
    ``--field-name``), ``argument`` (a positional argument), ``callback``, ``hidden``.
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata = {
        "help": help, "choices": choices, "bounds": bounds, "cli": cli,
        "resumable": resumable, "identity": identity,
    }  # fmt: skip
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def section(cls: type) -> Any:
    """A field grouping the options of dataclass ``cls`` (its defaults); flat outside Python (module doc)."""
    return dataclasses.field(default_factory=cls, metadata={"section": True})


class FlatField(typing.NamedTuple):
    """One leaf option of a config: ``path`` is the section names above it (``("optim",)`` for ``lr``)."""

    path: tuple[str, ...]
    field: dataclasses.Field
    type: Any


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def flat_fields(cls: type) -> dict[str, FlatField]:
    """Every leaf option of dataclass ``cls`` by its flat name, in declaration order (sections expanded in
    place). A flat name used twice, or also a section's name, is a bug in the config: an AssertionError."""
    hints = typing.get_type_hints(cls)
    out: dict[str, FlatField] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        inner = flat_fields(tp) if _is_section(tp) else {f.name: FlatField((), f, tp)}
        for name, leaf in inner.items():
            path = (f.name, *leaf.path) if _is_section(tp) else leaf.path
            assert name not in out, f"{cls.__name__}: option '{name}' is declared in two sections"
            out[name] = FlatField(path, leaf.field, leaf.type)
    sections = {leaf.path[0] for leaf in out.values() if leaf.path}
    clash = sections & set(out)
    assert not clash, f"{cls.__name__}: {sorted(clash)} name both a section and an option"
    return out


def resumable_fields(cls: type) -> frozenset[str]:
    """The flat names of the options a resumed run may change (``option(..., resumable=True)``)."""
    return frozenset(n for n, leaf in flat_fields(cls).items() if leaf.field.metadata.get("resumable"))


def not_identity_fields(cls: type) -> frozenset[str]:
    """The flat names of the options that do not change the output (``option(..., identity=False)``)."""
    return frozenset(
        n for n, leaf in flat_fields(cls).items() if not leaf.field.metadata.get("identity", True)
    )


def identity_dict(cfg: Any) -> dict[str, Any]:
    """``config_to_dict(cfg)`` without the options marked ``identity=False``: what the output is."""
    drop = not_identity_fields(type(cfg))
    return {k: v for k, v in config_to_dict(cfg).items() if k not in drop}


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(inner type, whether None is allowed)``: ``int | None`` -> ``(int, True)``; a union of several
    types -> ``(Any, ...)``; any other annotation -> ``(tp, False)``."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return tp, False
    args = typing.get_args(tp)
    inner = [a for a in args if a is not type(None)]
    return (inner[0] if len(inner) == 1 else Any), type(None) in args


def unescape(ctx: Any, param: Any, value: str | None) -> str | None:
    """A click callback for text-template options: shells pass ``\\n`` literally, and in a text template it
    almost always means a newline (``--text-template '{problem}\\n\\n{solution}'``)."""
    return value.replace("\\n", "\n").replace("\\t", "\t") if value is not None else None


def check(cfg: Any) -> None:
    """Enforce every field's ``choices`` and bounds, sections' included; the first violation is one
    ``RptError`` line."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check(value)
            continue
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
    inner, nullable = unwrap_optional(tp)
    if inner is not tp:
        return None if value is None and nullable else _coerce(name, value, inner)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
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

    Keys are the flat option names (``flat_fields``: a section's options by their own names); dashes are
    accepted in place of underscores. Unknown keys are an error (a typo in a recipe must not be ignored).
    """
    leaves = flat_fields(cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            field = key.replace("-", "_")
            if field not in leaves:
                raise RptError(
                    f"unknown config key '{key}' for {cls.__name__} (known: {', '.join(sorted(leaves))})"
                )
            values[field] = _coerce(field, value, leaves[field].type)
    try:
        cfg = from_flat(cls, **values)
    except (TypeError, ValueError) as e:
        raise RptError(str(e)) from None
    return cfg


def from_flat(cls: type[T], **values: Any) -> T:
    """``cls(...)`` from flat option names, each put in its section (values taken as they are: typed
    callers, as tests; ``build_config`` is the checked way in from a recipe or a command line)."""
    leaves = flat_fields(cls)
    unknown = sorted(set(values) - set(leaves))
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {', '.join(map(repr, unknown))}")

    def make(tp: type, path: tuple[str, ...]) -> Any:
        kwargs: dict[str, Any] = {}
        for name, leaf in leaves.items():
            if leaf.path[: len(path)] != path:
                continue
            if len(leaf.path) == len(path):
                if name in values:
                    kwargs[name] = values[name]
            elif leaf.path[len(path)] not in kwargs:
                sub = leaf.path[len(path)]
                kwargs[sub] = make(typing.get_type_hints(tp)[sub], (*path, sub))
        return tp(**kwargs)

    return make(cls, ())


def flat_values(cfg: Any) -> dict[str, Any]:
    """Every option of config ``cfg`` by its flat name, as held (no conversion), in declaration order."""
    out: dict[str, Any] = {}
    for name, leaf in flat_fields(type(cfg)).items():
        holder = cfg
        for part in leaf.path:
            holder = getattr(holder, part)
        out[name] = getattr(holder, name)
    return out


def replace_flat(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` by flat option names (``replace_flat(cfg, lr=1e-5)``)."""
    return from_flat(type(cfg), **{**flat_values(cfg), **changes})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/TOML-friendly flat dict of a config (sections expanded: ``flat_values``); paths become
    strings, and any other dataclass value a nested dict."""

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

    return {k: conv(v) for k, v in flat_values(cfg).items()}
