"""The one config mechanism (rpt_core.runtime.config): field constraints, layering, and the options generated
from a dataclass (rpt_core.runtime.cli.config_command)."""

from __future__ import annotations

from dataclasses import dataclass

import click
import pytest
import torch
from click.testing import CliRunner

from rpt_core.model.logprobs import logprobs_from_hidden
from rpt_core.runtime.cli import config_command
from rpt_core.runtime.config import build_config, check, option
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.eval.run import EvalConfig
from rpt_train.rl.config import OBJECTIVE_NAMES, TrainConfig
from rpt_train.rl.objective import OBJECTIVES
from tests.rpt_core.text.test_chat import QWEN_DIR


@dataclass
class Demo:
    data: str = option("in", "Input.", argument=True)
    mode: str = option("fast", "How.", choices=("fast", "slow"))
    steps: int = option(3, "Steps.", ge=1)
    ratio: float | None = option(None, "A fraction.", gt=0, lt=1)
    tags: list[str] = option(default_factory=list, help="Repeatable.", flag="--tag")
    loud: bool = option(False, "Say more.")

    def __post_init__(self) -> None:
        check(self)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "medium"}, "mode must be one of fast, slow, got 'medium'"),
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"ratio": 1.0}, "ratio must be < 1, got 1.0"),
        ({"ratio": 0.0}, "ratio must be > 0, got 0.0"),
    ],
)
def test_constraints_are_one_line_errors(values, message):
    with pytest.raises(RptError) as info:
        Demo(**values)
    assert str(info.value) == message


def test_layers_apply_left_to_right_and_unknown_keys_fail():
    cfg = build_config(Demo, {"steps": 5, "mode": "slow"}, {"steps": 7, "ratio": 0.5})
    assert (cfg.steps, cfg.mode, cfg.ratio) == (7, "slow", 0.5)
    with pytest.raises(RptError, match="unknown config key 'stpes'"):
        build_config(Demo, {"stpes": 1})


@config_command(Demo, "demo", name="demo")
def demo(cfg: Demo) -> None:
    click.echo(repr(cfg))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "config key 'steps' must be an integer, got True"),  # a bool is an int in Python
        ('"60"', "config key 'steps' must be an integer, got '60'"),
        ("2.0", "config key 'steps' must be an integer, got 2.0"),
        ("1", None),
    ],
)
def test_recipe_types_are_checked_strictly(tmp_path, value, message):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"[demo]\nsteps = {value}\n")
    result = CliRunner().invoke(demo, ["--config", str(recipe)])
    if message is None:
        assert result.exit_code == 0 and "steps=1" in result.output
    else:
        assert (result.exit_code, result.output) == (1, f"error: {message}\n")
    with pytest.raises(RptError, match="'loud' must be true or false, got 'yes'"):
        build_config(Demo, {"loud": "yes"})
    assert isinstance(build_config(Demo, {"ratio": 0.5}).ratio, float)


def test_an_unknown_recipe_table_is_refused_with_the_closest_name(tmp_path):
    from rpt_data.cli import main as rpt_data
    from rpt_train.cli import main as rpt_train

    recipe = tmp_path / "t.toml"
    recipe.write_text("[trian]\ntemplate = 'plain'\nlr = 1e-3\n[data]\nval_docs = 1\n")
    result = CliRunner().invoke(rpt_train, ["run", str(tmp_path), "--config", str(recipe)])
    assert (result.exit_code, result.output) == (
        1,
        f"error: {recipe}: unknown table [trian] (did you mean [train]?)\n",
    )
    recipe.write_text("[dta]\nval_docs = 1\n")
    result = CliRunner().invoke(rpt_data, ["build", "--config", str(recipe), "--out", str(tmp_path / "o")])
    assert (result.exit_code, result.output) == (
        1,
        f"error: {recipe}: unknown table [dta] (did you mean [data]?)\n",
    )
    recipe.write_text("[zzz]\n")
    result = CliRunner().invoke(demo, ["--config", str(recipe)])
    assert result.output.startswith(f"error: {recipe}: unknown table [zzz] (known: convert, data, ")


def test_generated_options_carry_help_choices_and_flags():
    out = CliRunner().invoke(demo, ["-h"]).output
    for text in (
        "--mode [fast|slow]",
        "--steps INTEGER",
        "--tag TEXT",
        "--loud / --no-loud",
        "--config FILE",
    ):
        assert text in out
    assert "Steps. [default: 3]" in out


def test_recipe_then_command_line(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[demo]\nsteps = 5\nmode = "slow"\ntags = ["a"]\n[train]\nratio = 0.5\n')
    result = CliRunner().invoke(
        demo, ["x", "--config", str(recipe), "--steps", "9", "--tag", "b", "--tag", "c"]
    )
    assert result.exit_code == 0, result.output
    # typed options win; the recipe's mode stays (a click default never overrides a recipe)
    assert "data='x', mode='slow', steps=9, ratio=None, tags=['b', 'c'], loud=False" in result.output
    bad = CliRunner().invoke(demo, ["--steps", "0"])
    assert (bad.exit_code, bad.output) == (1, "error: steps must be >= 1, got 0\n")


def test_inherited_keys_come_from_another_section_unless_overridden(tmp_path):
    @config_command(Demo, "demo", name="inheriting", inherit={"other": ("ratio", "steps")})
    def inheriting(cfg: Demo) -> None:
        click.echo(f"{cfg.ratio} {cfg.steps}")

    recipe = tmp_path / "r.toml"
    recipe.write_text("[other]\nratio = 0.5\nsteps = 2\n[demo]\nsteps = 4\n")
    assert CliRunner().invoke(inheriting, ["--config", str(recipe)]).output == "0.5 4\n"


def test_every_objective_is_a_train_choice():
    assert set(OBJECTIVE_NAMES) == set(OBJECTIVES)
    with pytest.raises(RptError, match="objective must be one of"):
        TrainConfig.from_flat(objective="nope")


def test_train_config_builders():
    cfg = TrainConfig.from_flat(template="plain", answer_tokens=2, max_new_tokens=64, num_generations=4)
    assert cfg.loss_config().max_len == 2  # the plain template caps completions at answer_tokens
    assert TrainConfig.from_flat(max_new_tokens=64).loss_config().max_len == 64


def test_temperature_zero_is_greedy_for_eval_but_refused_for_training():
    with pytest.raises(RptError, match="greedy decoding\\) cannot train: GRPO needs") as info:
        TrainConfig.from_flat(temperature=0)
    assert "\n" not in str(info.value)
    with pytest.raises(RptError, match="temperature must be >= 0"):
        TrainConfig.from_flat(temperature=-1)
    settings = EvalConfig(shards="s", temperature=0).settings()
    assert settings.rollout_spec(Tokenizer.load(QWEN_DIR)).sampling.greedy
    with pytest.raises(RptError, match="log-probs need a temperature > 0"):
        logprobs_from_hidden(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), 0.0)
