"""The config mechanism's sections and markers (``rpt_core.runtime.config``): a config grouped in sections
is flat outside Python (options, recipe keys, run_config.json), and the field markers give exactly the sets
the lists they replaced gave."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rpt_core.runtime.cli import config_command
from rpt_core.runtime.config import (
    build_config,
    check,
    config_to_dict,
    flat_fields,
    flat_values,
    from_flat,
    identity_dict,
    load_toml_section,
    not_identity_fields,
    option,
    replace_flat,
    resumable_fields,
    section,
    unwrap_optional,
)
from rpt_core.runtime.errors import RptError
from rpt_data.build.pipeline import BuildConfig, config_identity
from rpt_train.cli.run import run
from rpt_train.eval.run import EvalConfig
from rpt_train.passrate.score import PassRateConfig
from rpt_train.pretrain import RESUMABLE as PRETRAIN_RESUMABLE
from rpt_train.pretrain import PretrainConfig
from rpt_train.rl.config import RESUMABLE, TrainConfig, resume_differences

ROOT = Path(__file__).resolve().parents[2]

# `rpt-train run`'s parameters before TrainConfig had sections: every name, in order, must stay.
RUN_OPTIONS = [
    "--config",
    "shards",
    "--model",
    "--tokenizer",
    "--out",
    "--resume/--no-resume",
    "--objective",
    "--template",
    "--instruction-file",
    "--answer-tokens",
    "--max-prompt-tokens",
    "--max-new-tokens",
    "--reward",
    "--format-penalty",
    "--rlp-tokens",
    "--ema-decay",
    "--num-generations",
    "--temperature",
    "--top-p",
    "--top-k",
    "--batch-size",
    "--rollout-batch-size",
    "--micro-batch-size",
    "--advantage",
    "--loss-agg",
    "--epsilon",
    "--epsilon-high",
    "--num-iterations",
    "--beta",
    "--mask-truncated/--no-mask-truncated",
    "--dynamic-sampling/--no-dynamic-sampling",
    "--max-resample-batches",
    "--lr",
    "--warmup-steps",
    "--weight-decay",
    "--adam-beta1",
    "--adam-beta2",
    "--adam-eps",
    "--max-grad-norm",
    "--max-steps",
    "--max-flops",
    "--match-flops",
    "--seed",
    "--max-bad-steps",
    "--device",
    "--dtype",
    "--bf16/--no-bf16",
    "--cpu-autocast/--no-cpu-autocast",
    "--tf32/--no-tf32",
    "--gradient-checkpointing",
    "--compile/--no-compile",
    "--compile-decode/--no-compile-decode",
    "--rollout-weights",
    "--fsdp/--no-fsdp",
    "--logprob-chunk",
    "--shuffle-buffer",
    "--epochs",
    "--pass-rates",
    "--pass-above",
    "--pass-below",
    "--pass-margin",
    "--val-every",
    "--val-samples",
    "--save-every",
    "--keep-last",
    "--sample-every",
    "--num-samples",
    "--tensorboard/--no-tensorboard",
    "--quiet/--no-quiet",
]


# ---- toy configs (module level: their annotations are resolved by name)
@dataclass
class A:
    x: int = option(1)


@dataclass
class B:
    x: int = option(2)


@dataclass
class Twice:
    a: A = section(A)
    b: B = section(B)


@dataclass
class Clash:
    a: A = section(A)
    y: int = option(0)


@dataclass
class SectionNamedAsOption:
    x: A = section(A)


@dataclass
class Inner:
    rate: float = option(0.5, "A rate.", ge=0)
    name: str | None = option(None, "A name.")


@dataclass
class Outer:
    inner: Inner = section(Inner)
    steps: int = option(3, "Steps.")

    def __post_init__(self) -> None:
        check(self)  # reaches into the sections


# ---- the markers give the lists they replaced (a change to one of these sets is a deliberate one)
def test_marker_sets_pinned():
    assert (
        RESUMABLE
        == resumable_fields(TrainConfig)
        == {
            "resume",
            "out",
            "max_steps",
            "epochs",
            "max_bad_steps",
            "save_every",
            "keep_last",
            "val_every",
            "val_samples",
            "sample_every",
            "num_samples",
            "tensorboard",
            "quiet",
            "device",
            "fsdp",
            "compile",
            "tf32",
            "rollout_weights",
            "gradient_checkpointing",
            "micro_batch_size",
            "rollout_batch_size",
            "logprob_chunk",
            "max_flops",
            "match_flops",
        }
    )
    assert (
        PRETRAIN_RESUMABLE
        == resumable_fields(PretrainConfig)
        == {"resume", "quiet", "device", "save_every", "out"}
    )
    assert not_identity_fields(BuildConfig) == {"out", "quiet", "overwrite"}
    assert not_identity_fields(EvalConfig) == {
        "base",
        "run",
        "run_as",
        "cpt",
        "models",
        "out",
        "quiet",
        "modes",
    }
    assert not_identity_fields(PassRateConfig) == {"out", "quiet", "max_samples"}
    # The facts are kept apart: nothing is marked that was in no list.
    for cls in (TrainConfig, EvalConfig, PassRateConfig, BuildConfig):
        assert not_identity_fields(cls) <= set(flat_fields(cls))
    assert not_identity_fields(TrainConfig) == frozenset()
    assert resumable_fields(BuildConfig) == resumable_fields(EvalConfig) == frozenset()


def test_identity_dict_drops_marked_fields():
    cfg = BuildConfig(out="elsewhere", quiet=True, overwrite=True, seed=3)
    key = identity_dict(cfg)
    assert key == {k: v for k, v in config_to_dict(cfg).items() if k not in ("out", "quiet", "overwrite")}
    assert config_identity(cfg, 2) == {**key, "world_size": 2}


# ---- sections: flat outside Python
def test_train_config_is_sectioned_and_flat_names_unique():
    leaves = flat_fields(TrainConfig)
    assert list(leaves) == [o.split("/")[0].lstrip("-").replace("-", "_") for o in RUN_OPTIONS[1:]]
    assert {leaf.path for leaf in leaves.values()} == {
        ("io",),
        ("task",),
        ("sampling",),
        ("grpo",),
        ("optim",),
        ("runtime",),
        ("data",),
        ("log",),
    }
    assert leaves["lr"].path == ("optim",) and leaves["temperature"].path == ("sampling",)
    assert {f.name for f in dataclasses.fields(TrainConfig)}.isdisjoint(leaves)
    cfg = TrainConfig.from_flat(lr=1e-5, temperature=0.5, template="plain")
    assert (cfg.optim.lr, cfg.sampling.temperature, cfg.task.template) == (1e-5, 0.5, "plain")


def test_flat_names_must_be_unique():
    with pytest.raises(AssertionError, match="two sections"):
        flat_fields(Twice)
    assert list(flat_fields(Clash)) == ["x", "y"]
    with pytest.raises(AssertionError, match="both a section and an option"):
        flat_fields(SectionNamedAsOption)


def test_flat_round_trip():
    cfg = TrainConfig.from_flat(shards="s", lr=3e-6, top_k=5, epsilon_high=0.3, fsdp=True, pass_margin=0.1)
    flat = config_to_dict(cfg)
    assert list(flat) == list(flat_fields(TrainConfig))  # flat, in the order run_config.json always had
    assert flat["lr"] == 3e-6 and flat["top_k"] == 5 and "optim" not in flat
    assert build_config(TrainConfig, json.loads(json.dumps(flat))) == cfg
    assert from_flat(TrainConfig, **flat_values(cfg)) == cfg
    changed = replace_flat(cfg, lr=1e-4, quiet=True)
    assert changed.optim.lr == 1e-4 and changed.log.quiet and changed.sampling.top_k == 5
    assert cfg.optim.lr == 3e-6  # replace_flat copies
    with pytest.raises(TypeError, match="no option 'nope'"):
        TrainConfig.from_flat(nope=1)


def test_checks_reach_into_sections_with_flat_names():
    with pytest.raises(RptError, match="^top-p must be <= 1, got 2"):
        TrainConfig.from_flat(top_p=2.0)
    with pytest.raises(RptError, match="^loss-agg must be one of"):
        build_config(TrainConfig, {"loss-agg": "mean"})
    with pytest.raises(RptError, match="unknown config key 'optim' for TrainConfig \\(known: adam_beta1, "):
        build_config(TrainConfig, {"optim": {"lr": 1.0}})


def test_toml_flat_keys_fill_sections(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[train]\nlr = 2e-6\ntemperature = 1\ntemplate = "plain"\nmax-steps = 7\n')
    cfg = build_config(TrainConfig, load_toml_section(recipe, "train"), {"seed": 4})
    assert (cfg.optim.lr, cfg.sampling.temperature, cfg.task.template) == (2e-6, 1.0, "plain")
    assert (cfg.optim.max_steps, cfg.optim.seed) == (7, 4)
    for path in sorted([*ROOT.glob("pipelines/*.toml"), *ROOT.glob("tests/pipelines/*.toml")]):
        table = load_toml_section(path, "train")
        flat = config_to_dict(build_config(TrainConfig, table))
        assert all(flat[k.replace("-", "_")] == v for k, v in table.items() if not isinstance(v, list))


def test_resume_compares_flat_keys():
    cfg = TrainConfig.from_flat(shards="s", max_steps=10)
    saved = json.loads(json.dumps(config_to_dict(TrainConfig.from_flat(shards="s", lr=1e-5))))
    applied, refused = resume_differences(saved, cfg)
    assert applied == {"max_steps": (1000, 10)} and refused == {"lr": (1e-5, 1e-6)}


# ---- click: the same flat options, generated generically
def test_run_option_names_unchanged():
    assert ["/".join(p.opts + p.secondary_opts) for p in run.params] == RUN_OPTIONS


def test_config_command_flattens_any_sectioned_config(tmp_path):
    seen = []

    @config_command(Outer, "train", name="toy")
    def cmd(cfg: Outer) -> None:
        seen.append(cfg)

    assert cmd.name == "toy"

    assert [p.name for p in cmd.params] == ["config", "rate", "name", "steps"]
    recipe = tmp_path / "r.toml"
    recipe.write_text("[train]\nrate = 0.25\nsteps = 9\n")
    result = CliRunner().invoke(cmd, ["--config", str(recipe), "--name", "x", "--steps", "4"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == Outer(Inner(0.25, "x"), 4)
    result = CliRunner().invoke(cmd, ["--rate", "-1"])
    assert result.exit_code == 1 and "rate must be >= 0, got -1.0" in result.output
    assert isinstance(cmd, click.Command)


def test_unwrap_optional():
    assert unwrap_optional(int | None) == (int, True)
    assert unwrap_optional(list[str]) == (list[str], False)
    assert unwrap_optional(int) == (int, False)
    assert unwrap_optional(int | str)[1] is False and unwrap_optional(int | str | None)[1] is True
