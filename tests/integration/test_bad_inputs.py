"""Bad inputs x commands, end to end through both CLIs: every case ends in exit status 1 with exactly one
``error: ...`` line that names the culprit (click's usage errors: status 2), never a traceback.

``COMMANDS`` holds a working invocation of every command; ``CASES`` says how each kind of bad input spoils
one, and for which commands. ``test_every_command_is_in_the_suite`` walks both click groups, so a new
command fails until it is added here, and then inherits the cases that apply to every command (a broken
recipe, an unknown option, ``-h``). The world they share is tiny: the tiny task's tokenizer and model (as
proxy, policy and pretraining tokenizer), a corpus of letters and shards built from it.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import tokenizers
from click.testing import CliRunner

from rpt_core.data.shards import MANIFEST_NAME, shard_paths
from rpt_core.model import Qwen3ForCausalLM
from rpt_core.model.hf_io import WEIGHTS_NAME
from rpt_data.build.pipeline import BuildConfig, build
from rpt_data.cli import main as data_main
from rpt_train.cli import main as train_main
from tests.helpers import (
    LETTERS,
    corrupt_data_pages,
    save_model_dir,
    tiny_tokenizer,
    truncate,
    unwritable_dir,
    write_gguf,
    write_lock,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class World:
    corpus: Path
    model: Path
    shards: Path
    out: Path
    gguf: Path


@dataclass(frozen=True)
class Command:
    group: click.Group
    path: tuple[str, ...]  # subcommand names under the group
    argv: Callable[[World], list[str]]
    writes: str | None = None  # "dir" (a locked output directory), "file" (OUT, written atomically), None


COMMANDS: dict[str, Command] = {
    "rpt-data build": Command(data_main, ("build",), lambda w: [
        "--dataset", str(w.corpus), "--proxy-model", str(w.model), "--text-template", "{problem}",
        "--val-docs", "2", "--out", str(w.out), "--quiet"], "dir"),
    "rpt-data inspect": Command(data_main, ("inspect",), lambda w: [str(w.shards)]),
    "rpt-data generate": Command(data_main, ("generate",), lambda w: [
        "--n", "3", "--out", str(w.out / "gen.jsonl"), "--quiet"], "file"),
    "rpt-data tokenizer train": Command(data_main, ("tokenizer", "train"), lambda w: [
        str(w.corpus), "--vocab-size", "300", "--out", str(w.out), "--quiet"], "file"),
    "rpt-train pretrain": Command(train_main, ("pretrain",), lambda w: [
        str(w.corpus), "--tokenizer", str(w.model), "--out", str(w.out), "--max-steps", "1", "--seq-len", "8",
        "--batch-size", "2", "--quiet"], "dir"),
    "rpt-train run": Command(train_main, ("run",), lambda w: [
        str(w.shards), "--model", str(w.model), "--out", str(w.out), "--template", "plain",
        "--max-steps", "1", "--batch-size", "2", "--num-generations", "2", "--save-every", "0", "--quiet"],
        "dir"),
    "rpt-data export verl": Command(data_main, ("export", "verl"), lambda w: [
        str(w.shards), str(w.out), "--template", "plain", "--quiet"], "dir"),
    "rpt-train convert gguf": Command(train_main, ("convert", "gguf"), lambda w: [
        str(w.gguf), str(w.out)], "file"),
    "rpt-train eval": Command(train_main, ("eval",), lambda w: [
        str(w.shards), "--base", str(w.model), "--out", str(w.out), "--max-samples", "2", "--mode", "ntp",
        "--quiet"], "dir"),
    "rpt-train passrate": Command(train_main, ("passrate",), lambda w: [
        str(w.shards), "--model", str(w.model), "--out", str(w.out), "--max-samples", "2", "--samples", "2",
        "--template", "plain", "--quiet"], "dir"),
}  # fmt: skip

ALL = frozenset(COMMANDS)
READS_CORPUS = {"rpt-data build", "rpt-data tokenizer train", "rpt-train pretrain", "rpt-train convert gguf"}
READS_SHARDS = {
    "rpt-data inspect",
    "rpt-data export verl",
    "rpt-train run",
    "rpt-train eval",
    "rpt-train passrate",
}
LOADS_MODEL = {"rpt-data build", "rpt-train run", "rpt-train eval", "rpt-train passrate"}
DIR_WRITERS = {k for k, c in COMMANDS.items() if c.writes == "dir"}
WRITERS = {k for k, c in COMMANDS.items() if c.writes}


@dataclass(frozen=True)
class Case:
    """How to spoil a working invocation: ``spoil(world, tmp_path) -> (world, extra args, expected text)``."""

    commands: frozenset[str]
    spoil: Callable[[World, Path], tuple[World, list[str], str]]
    exit_code: int = 1


def _missing_input(w: World, tmp: Path):
    spoiled = dataclasses.replace(
        w, corpus=tmp / "missing.jsonl", shards=tmp / "missing-shards", gguf=tmp / "missing.gguf"
    )
    return spoiled, [], "missing"


def _missing_model(w: World, tmp: Path):
    return dataclasses.replace(w, model=tmp / "no-model"), [], "no-model"


def _corrupt_model(w: World, tmp: Path):
    model = shutil.copytree(w.model, tmp / "model")
    return dataclasses.replace(w, model=model), [], str(truncate(model / WEIGHTS_NAME))


def _corrupt_shards(w: World, tmp: Path, manifest: bool = True):
    shards = shutil.copytree(w.shards, tmp / "shards")
    if not manifest:
        (shards / MANIFEST_NAME).unlink()
    for split in ("train", "val"):
        corrupt_data_pages(shard_paths(shards, split)[0])
    return dataclasses.replace(w, shards=shards), [], f"{shards}/"


def _out_is_a_file(w: World, tmp: Path):
    (tmp / "a-file").write_text("x")
    return dataclasses.replace(w, out=tmp / "a-file"), [], "a-file"


def _out_unwritable(w: World, tmp: Path):
    out = unwritable_dir(tmp)
    return dataclasses.replace(w, out=out), [], str(out)


def _out_locked(w: World, tmp: Path):
    write_lock(w.out)  # held by this (live) process
    return w, [], f"{w.out} is in use by rpt-train run (pid"


def _bad_recipe(w: World, tmp: Path):
    (tmp / "bad.toml").write_text("[train\nlr = ")
    return w, ["--config", str(tmp / "bad.toml")], "bad.toml: invalid TOML"


CASES: dict[str, Case] = {
    "missing input": Case(frozenset(READS_CORPUS | READS_SHARDS), _missing_input),
    "missing model": Case(frozenset(LOADS_MODEL | {"rpt-train pretrain"}), _missing_model),
    "truncated model.safetensors": Case(frozenset(LOADS_MODEL), _corrupt_model),
    "corrupt shard pages": Case(frozenset(READS_SHARDS), _corrupt_shards),
    "corrupt shard pages, no manifest": Case(
        frozenset(READS_SHARDS), lambda w, t: _corrupt_shards(w, t, manifest=False)
    ),
    "out is a file": Case(frozenset(DIR_WRITERS | {"rpt-data tokenizer train"}), _out_is_a_file),
    "out unwritable": Case(frozenset(WRITERS), _out_unwritable),
    "out locked by another writer": Case(frozenset(DIR_WRITERS), _out_locked),
    "broken recipe": Case(ALL, _bad_recipe),
    "unknown option": Case(ALL, lambda w, t: (w, ["--no-such-option"], "No such option"), exit_code=2),
}


def _corpus(path: Path) -> Path:
    rng = random.Random(0)
    lines = [
        json.dumps({"problem": "".join(" " + rng.choice(LETTERS) for _ in range(40)), "solution": "-"})
        for _ in range(10)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    corpus = _corpus(root / "corpus.jsonl")
    model = save_model_dir(root / "model", tiny_tokenizer())
    shards = root / "shards"
    build(
        BuildConfig(
            dataset=[str(corpus)],
            proxy_model=str(model),
            text_template="{problem}",
            val_docs=2,
            rows_per_shard=100,
            out=str(shards),
            quiet=True,
        )
    )
    raw = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    gguf_file = write_gguf(root / "m.gguf", Qwen3ForCausalLM.from_pretrained(model, device="cpu"), raw)
    return World(corpus, model, shards, root / "out", gguf_file)


def invoke(command: Command, argv: list[str]):
    return CliRunner().invoke(command.group, [*command.path, *argv])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_works_as_written(world, tmp_path, name):
    """The baseline each case spoils: a case must fail because of its bad input, not anything else."""
    result = invoke(COMMANDS[name], COMMANDS[name].argv(dataclasses.replace(world, out=tmp_path / "out")))
    assert result.exit_code == 0, result.output


CROSS = [(case, name) for case in CASES for name in sorted(CASES[case].commands)]


@pytest.mark.parametrize(("case", "name"), CROSS, ids=[f"{c}-{n}" for c, n in CROSS])
def test_a_bad_input_is_one_error_line(world, tmp_path, case, name):
    spoiled, extra, expected = CASES[case].spoil(dataclasses.replace(world, out=tmp_path / "out"), tmp_path)
    result = invoke(COMMANDS[name], [*COMMANDS[name].argv(spoiled), *extra])
    assert result.exit_code == CASES[case].exit_code, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    if CASES[case].exit_code == 2:  # click's usage error: usage lines, then the message
        assert expected in result.stderr
        return
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith(("warning: ", "note: "))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert result.stdout == "", result.stdout


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every group and command under ``group``, as subcommand paths (the group itself is ``()``)."""
    out = [path]
    for name, cmd in group.commands.items():
        out += _commands(cmd, (*path, name)) if isinstance(cmd, click.Group) else [(*path, name)]
    return out


def test_every_command_is_in_the_suite():
    found = {
        f"{prog} {' '.join(p)}"
        for prog, g in (("rpt-data", data_main), ("rpt-train", train_main))
        for p in _commands(g)
        if p and not isinstance(_resolve(g, p), click.Group)
    }
    assert found == set(COMMANDS)


def _resolve(group: click.Group, path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = group
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return cmd


@pytest.mark.parametrize(
    ("group", "path"),
    [(g, p) for g in (data_main, train_main) for p in _commands(g)],
    ids=[
        f"{prog} {' '.join(p)}".strip()
        for prog, g in (("rpt-data", data_main), ("rpt-train", train_main))
        for p in _commands(g)
    ],
)
def test_dash_h_is_help_everywhere(group, path):
    short, long = (CliRunner().invoke(group, [*path, flag]) for flag in ("-h", "--help"))
    assert short.exit_code == long.exit_code == 0 and short.output == long.output and "Usage:" in short.output


def test_inspect_reports_errors_like_every_command(tmp_path):
    missing = tmp_path / "nothing"
    result = CliRunner().invoke(data_main, ["inspect", str(missing)])
    assert (result.exit_code, result.stderr) == (1, f"error: {missing}: no such build directory\n")
