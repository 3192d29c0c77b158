"""Shared CLI plumbing for ``rpt-train`` and ``rpt-data``: the click group that turns ``RptError`` (and an
operating-system error, named by its file) into one line on stderr and exit status 1 (130 after Ctrl-C;
click's own usage errors exit 2), the one way a command gets its options, and ``stop_signals``: the flag a
training loop checks between steps so that Ctrl-C or a scheduler's SIGTERM (Slurm, Kubernetes) ends it at a
step boundary with a checkpoint, then exit 130 or 143.

A command is ``@config_command(ConfigClass, section)`` over a function taking ``cfg``: every field of the
config dataclass becomes a click option (or a positional argument) with the field's help text, choices
and default, plus ``--config FILE.toml``. The config is then layered by
``rpt_core.runtime.config.build_config``:
dataclass defaults < the recipe's ``[section]`` < options typed on the command line (only typed ones:
click defaults never override a recipe). A config's sections (``rpt_core.runtime.config.section``) are
expanded in place: each of their options is a flat ``--option`` of the command, as in a recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import signal
import sys
import threading
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from rpt_core.runtime.config import (
    RECIPE_TABLES,
    build_config,
    flat_fields,
    flat_values,
    load_toml_section,
    unwrap_optional,
)
from rpt_core.runtime.errors import RptError

_CLICK_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING}


EXIT_ERROR = 1  # a user error: one ``error: ...`` line (click's own usage errors exit 2)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it), after whatever could be saved was
EXIT_TERMINATED = 143  # SIGTERM (128 + 15, what a killed job reports), after the checkpoint was saved
_EXIT_CODES = {"SIGINT": EXIT_INTERRUPTED, "SIGTERM": EXIT_TERMINATED}


class Terminated(KeyboardInterrupt):
    """A second SIGTERM: stop now, as a second Ctrl-C does, but exit 143."""


class StopFlag:
    """Set by ``stop_signals``: ``hit`` once a stop was asked, ``signal`` its name (SIGINT or SIGTERM)."""

    def __init__(self) -> None:
        self.signal: str | None = None

    @property
    def hit(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES.get(self.signal or "", 0)

    @property
    def word(self) -> str:
        return "terminated" if self.signal == "SIGTERM" else "interrupted"


@contextlib.contextmanager
def stop_signals(what: str = "finishing this step, then saving a checkpoint"):
    """Turn the first Ctrl-C or SIGTERM into a flag a loop checks between steps; a second one raises
    KeyboardInterrupt (the loop still saves the state from before the step in progress).

    SIGTERM is a request, not a crash: a scheduler sends it with a grace period before SIGKILL, so the step
    in progress finishes and its checkpoint is written (a step plus a save must fit the grace period).
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield flag
        return

    def handler(signum, frame):
        if flag.hit:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        flag.signal = signal.Signals(signum).name
        again = "Ctrl-C" if signum == signal.SIGINT else "a second SIGTERM"
        print(f"\n{flag.signal}: {what} ({again} to stop now)", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def os_error_line(e: OSError) -> str:
    """An operating-system error as one line naming its file: ``/x/y: No space left on device``."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e) or type(e).__name__
    return f"{where}: {what}" if where else what


def raise_naming_out(e: OSError, cfg: Any) -> None:
    """An operating-system error that names no file (a full disk met by ``write``, as in a Parquet or JSON
    writer) is raised again as one line naming the command's ``--out``, where it was writing."""
    holder = dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)
    out = flat_values(cfg).get("out") if holder else getattr(cfg, "out", None)
    if e.filename is None and out and not isinstance(e, BrokenPipeError):
        what = e.strerror or str(e) or type(e).__name__
        raise RptError(f"{out}: {what} (while writing the output)") from None


@contextlib.contextmanager
def user_errors():
    """``RptError`` -> ``error: <message>`` on stderr and exit 1 (no traceback); so is an operating-system
    error (a full disk, a file that cannot be written), named by its file; Ctrl-C -> exit 130, a second
    SIGTERM (``Terminated``) -> exit 143."""
    try:
        yield
    except RptError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_ERROR)
    except BrokenPipeError:
        raise  # output piped into `head`: click ends quietly
    except OSError as e:
        click.echo(f"error: {os_error_line(e)}", err=True)
        sys.exit(EXIT_ERROR)
    except Terminated:
        click.echo("terminated", err=True)
        sys.exit(EXIT_TERMINATED)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


class RptGroup(click.Group):
    """A click group whose commands report user errors as one line (see ``user_errors``)."""

    def invoke(self, ctx: click.Context):
        with user_errors():
            return super().invoke(ctx)


class LazyRptGroup(RptGroup):
    """An ``RptGroup`` whose commands are imported when looked up: ``lazy_commands={"name": "module:attr"}``.

    A command module imports what its work needs (torch for ``build``, polars for ``inspect``); imported
    lazily, a light command (``rpt-data export verl``) starts without paying for the heavy ones.
    """

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            module, attr = self.lazy_commands[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


def _param(fld: dataclasses.Field, tp: Any) -> Callable:
    """The click decorator for one config field."""
    meta = fld.metadata
    cli = dict(meta.get("cli") or {})
    many = typing.get_origin(tp) in (list, tuple)
    item = typing.get_args(tp)[0] if many and typing.get_args(tp) else tp
    choices = meta.get("choices")
    ptype = (
        click.Choice([str(c) for c in choices])
        if choices is not None
        else _CLICK_TYPES.get(item, click.STRING)
    )
    if cli.pop("argument", False):
        return click.argument(
            fld.name, nargs=-1 if many else 1, required=cli.pop("required", False), type=ptype
        )
    default = fld.default if fld.default is not dataclasses.MISSING else None
    # Escaped, so a default text template shows as '{problem}\n\n{solution}' on one line.
    shown = (
        ""
        if default in (None, "", False) or many
        else f" [default: {str(default).encode('unicode_escape').decode()}]"
    )
    name = cli.pop("flag", "--" + fld.name.replace("_", "-"))
    decl = f"{name}/--no-{name[2:]}" if item is bool else name
    # No click default: the dataclass holds the defaults, and only typed options override a recipe.
    # (An explicit default=None would also stop click from enforcing required=True.)
    kwargs: dict[str, Any] = {"help": (meta.get("help") or "") + shown, **cli}
    if item is not bool:
        kwargs["type"] = ptype
    if many:
        kwargs.update(multiple=True)
    return click.option(decl, fld.name, **kwargs)


def config_command(
    cls: type,
    section: str,
    name: str | None = None,
    inherit: Mapping[str, Sequence[str]] | None = None,
    group: click.Group | None = None,
) -> Callable:
    """Decorate ``f(cfg)`` into a click command whose options are ``cls``'s fields (see the module doc).

    ``inherit`` names keys that a recipe's other sections supply when this section does not set them
    (``rpt-train eval`` takes the template settings of ``[train]``, so evaluation matches training).
    """
    leaves = flat_fields(cls)
    RECIPE_TABLES.update((section, *(inherit or {})))

    def decorate(f: Callable) -> click.Command:
        @functools.wraps(f)
        @click.pass_context
        def command(ctx: click.Context, config: str | None, **_: Any) -> Any:
            with user_errors():  # also when the command is invoked on its own, outside its group
                cfg = resolve_config(cls, ctx, section, config, inherit)
                try:
                    return f(cfg)
                except OSError as e:
                    raise_naming_out(e, cfg)
                    raise

        # The command's own fields first, then those of shared option classes it inherits (RolloutOptions):
        # --help leads with what the command is about. A section's options count as its field's.
        own = set(vars(cls).get("__annotations__", {}))
        mine = lambda key: (leaves[key].path or (key,))[0] in own  # noqa: E731
        for key in reversed(sorted(leaves, key=lambda k: not mine(k))):
            command = _param(leaves[key].field, unwrap_optional(leaves[key].type)[0])(command)
        command = click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False),
            default=None,
            help=f"TOML recipe; its [{section}] table sets defaults that command-line options override.",
        )(command)
        maker = group.command if group is not None else click.command
        return maker(
            name or f.__name__.replace("_", "-"), context_settings={"help_option_names": ["-h", "--help"]}
        )(command)

    return decorate


def explicit_options(ctx: click.Context, exclude: tuple[str, ...] = ("config",)) -> dict[str, Any]:
    """The options the user typed on the command line (not click defaults), by parameter name."""
    out = {}
    for name, value in ctx.params.items():
        if name in exclude:
            continue
        source = ctx.get_parameter_source(name)
        if source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT):
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def resolve_config(
    cls: type,
    ctx: click.Context,
    section: str,
    config_path: str | None,
    inherit: Mapping[str, Sequence[str]] | None = None,
) -> Any:
    """Defaults < inherited keys of other sections < ``[section]`` of ``config_path`` < typed options."""
    layers: list[dict[str, Any]] = []
    if config_path:
        for other, keys in (inherit or {}).items():
            table = load_toml_section(config_path, other)
            layers.append({k: table[k] for k in keys if k in table})
        layers.append(load_toml_section(config_path, section))
    return build_config(cls, *layers, explicit_options(ctx))
