"""``pipelines/verl-grpo.sh`` cannot run here (verl + vLLM + GPUs), so check what it can be checked for
without verl: every file, function and rpt command it names exists, and the verl arguments it builds
from an export (``PRINT_ARGS=1``) say what the RPT paper's setup and the export need. ``make
verl-check`` composes the same arguments against an installed verl's own config."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
from pathlib import Path

import jinja2
import pytest
from click.testing import CliRunner

from rpt_core.text.prompts import load_template
from rpt_data.cli import main as rpt_data
from rpt_data.export.verl_rows import RAW_CHAT_TEMPLATE, REWARD_FUNCTION, prompt_messages
from tests.conftest import REPO
from tests.helpers import tiny_tokenizer, write_task_shards

SCRIPT = REPO / "pipelines" / "verl-grpo.sh"
TEXT = SCRIPT.read_text(encoding="utf-8")


def module_of(path: str):
    return importlib.import_module(path.removesuffix(".py").replace("/", "."))


def test_every_repository_file_the_script_names_exists():
    named = set(re.findall(r"\b((?:pipelines|rpt_train|rpt_data)/[\w./-]+\.(?:py|toml|sh))\b", TEXT))
    assert named >= {"rpt_data/export/verl.py", "pipelines/omnimath-qwen3-0.6b.toml"}
    for path in named:
        assert (REPO / path).is_file(), path


def test_every_function_the_script_names_exists():
    for path, name in re.findall(r"see (\w+/[\w/]+\.py) (\w+)", TEXT):
        assert callable(getattr(module_of(path), name)), f"{path}: {name}"
    # the reward it passes to verl (from the export's manifest): verl's custom-reward signature
    fn = getattr(module_of(REWARD_FUNCTION["path"]), REWARD_FUNCTION["name"])
    params = list(inspect.signature(fn).parameters)
    assert params[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    assert (REPO / REWARD_FUNCTION["path"]).is_file()


@pytest.mark.parametrize("command", sorted(set(re.findall(r"rpt-data (\w+(?: verl)?)", TEXT))))
def test_every_rpt_command_the_script_names_exists(command):
    result = CliRunner().invoke(rpt_data, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verl")
    tok = tiny_tokenizer()
    tok.save(root / "tok")
    shards = write_task_shards(root / "shards", tok, n_train=64, n_val=8)
    out = {}
    for name, extra in (("qwen3-think", []), ("plain", ["--answer-tokens", "3"])):
        args = [
            "export",
            "verl",
            str(shards),
            str(root / name),
            "--template",
            name,
            "--tokenizer",
            str(root / "tok"),
        ]
        assert CliRunner().invoke(rpt_data, [*args, *extra, "--quiet"]).exit_code == 0
        out[name] = root / name
    return out


def verl_args(data: Path, *extra: str, **env: str) -> dict[str, str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), *extra],
        env={"PATH": os.environ["PATH"], "DATA": str(data), "PRINT_ARGS": "1", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_the_paper_setup_and_the_reward_reach_verl(exports):
    args = verl_args(exports["qwen3-think"])
    manifest = json.loads((exports["qwen3-think"] / "manifest.json").read_text())
    expected = {
        "algorithm.adv_estimator": "grpo",
        "actor_rollout_ref.rollout.n": "8",
        "actor_rollout_ref.rollout.temperature": "0.8",
        "actor_rollout_ref.actor.optim.lr": "1e-6",
        "actor_rollout_ref.actor.use_kl_loss": "False",
        "actor_rollout_ref.actor.kl_loss_coef": "0",
        "algorithm.use_kl_in_reward": "False",
        "reward.custom_reward_function.name": "compute_score",
        "reward.custom_reward_function.path": str(REPO / "rpt_train" / "verl_reward.py"),
        "data.train_files": str(exports["qwen3-think"] / "train.parquet"),
        "data.val_files": str(exports["qwen3-think"] / "val.parquet"),
        "data.max_prompt_length": str(manifest["verl"]["max_prompt_length"]),
        "+data.apply_chat_template_kwargs.enable_thinking": "True",
    }
    assert {k: args.get(k) for k in expected} == expected
    assert "actor_rollout_ref.model.custom_chat_template" not in args  # the model's own chat template
    for key in ("data.train_files", "data.val_files", "reward.custom_reward_function.path"):
        assert Path(args[key]).is_file(), key


def test_plain_renders_the_raw_context_and_generates_answer_tokens(exports):
    args = verl_args(exports["plain"])
    assert args["data.max_response_length"] == "3"
    chat_template = args["actor_rollout_ref.model.custom_chat_template"]
    assert chat_template == f"'{RAW_CHAT_TEMPLATE}'"  # a hydra-quoted string: braces stay literal
    messages = prompt_messages(load_template("plain"), " a b c")
    assert jinja2.Template(chat_template[1:-1]).render(messages=messages) == " a b c"


def test_environment_and_arguments_override_the_defaults(exports):
    args = verl_args(exports["qwen3-think"], "trainer.logger=[console,wandb]", GPUS="4", LR="3e-6")
    assert (args["trainer.n_gpus_per_node"], args["actor_rollout_ref.actor.optim.lr"]) == ("4", "3e-6")
    assert args["trainer.logger"] == "[console,wandb]"  # hydra: the last value of a key wins


def test_a_missing_export_is_one_error_line(tmp_path):
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": os.environ["PATH"], "DATA": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert (
        result.returncode == 1
        and result.stderr.startswith("error:")
        and "rpt-data export verl" in result.stderr
    )
