"""Tests for rpt_train.eval.run and ``rpt-train eval``: a base model and a fake run with two checkpoints on
hand-made val shards -> exact scores in eval.json, the console table, eval.png, and the result cache."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

import rpt_train.eval.run as eval_run
from rpt_train.errors import RptError
from rpt_train.eval.run import EvalConfig, format_table, run_eval
from rpt_train.rl.checkpoint import TRAINER_STATE
from rpt_train.shards import MANIFEST_NAME, rows_to_table, shard_name, write_shard
from rpt_train.tokenizer import Tokenizer
from tests.rpt_train.evalkit import bigram_model, shard_row, tiny_tokenizer

# ------------------------------------------------------------------------------------------- fixtures
# (The tokenizer and the hand-set model mirror tests/rpt_train/eval/test_score.py, which explains them.)

pytestmark = pytest.mark.usefixtures("one_thread")


ROWS = [
    shard_row("A", "x", ["y", "w"], 0.4999),  # below every threshold
    shard_row("B", "zzx", ["y", "w"], 0.5),
    shard_row("C", "x", ["z"], 0.9999),
    shard_row("D", "abp", ["a", "b"], 1.0),
    shard_row("E", "q", ["z"], 1.5),
    shard_row("F", "p", ["a", "bc"], 2.0),
    shard_row("G", "yp", ["ab"], 1.7),
]
FULL = {"x": "y", "y": "w", "p": "ab", "q": "z"}
# Hand-counted (correct, total) per mode and bucket for each model of the fixture (see test_evaluate.py).
ZERO = {"easy": (0, 6), "medium": (0, 4), "hard": (0, 3)}
EXPECTED = {
    "base": {"ntp": ZERO, "reasoning": ZERO},  # no mapping: always token 0
    "step 10": {m: {"easy": (1, 6), "medium": (0, 4), "hard": (0, 3)} for m in ("ntp", "reasoning")},
    "step 20": {
        "ntp": {"easy": (3, 6), "medium": (2, 4), "hard": (2, 3)},
        "reasoning": {"easy": (4, 6), "medium": (3, 4), "hard": (2, 3)},
    },
}


def save_model(tok: Tokenizer, mapping: dict[str, str], path: Path) -> Path:
    bigram_model(tok, mapping).save_pretrained(path)
    tok.save(path)
    return path


def save_step(tok: Tokenizer, mapping: dict[str, str], path: Path) -> Path:
    """A run checkpoint: the model directory plus the trainer state that marks it complete."""
    save_model(tok, mapping, path)
    torch.save({}, path / TRAINER_STATE)
    return path


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return tiny_tokenizer()


@pytest.fixture
def setup(tmp_path, tok):
    """Shards, a base model, and a run with checkpoints at steps 10 and 20 plus a metrics.jsonl."""
    shards = tmp_path / "shards"
    write_shard(shards / "val" / shard_name("val", 0, 0), rows_to_table(ROWS))
    write_shard(shards / "train" / shard_name("train", 0, 0), rows_to_table(ROWS[:1]))
    base = save_model(tok, {}, tmp_path / "base")
    run = tmp_path / "run"
    save_step(tok, {"x": "y"}, run / "checkpoints" / "step-000010")
    save_step(tok, FULL, run / "checkpoints" / "step-000020")
    (run / "checkpoints" / "latest").write_text("step-000020")
    (run / "checkpoints" / "step-000030.tmp").mkdir()  # an unfinished save: not a checkpoint
    metrics = [
        {"step": 10, "reward": 0.25, "lr": 1e-6},
        {"step": 15, "reward": None},  # non-finite values are logged as null
        {"step": 15, "val_reward": 0.5},  # no training reward on this line
        {"step": 20, "reward": 0.5},
    ]
    text = "".join(json.dumps(m) + "\n" for m in metrics) + '{"step": 25, "reward_me'  # cut by a crash
    (run / "metrics.jsonl").write_text(text)
    return {"shards": shards, "base": base, "run": run, "out": tmp_path / "eval", "root": tmp_path}


def config(setup, **kw) -> EvalConfig:
    defaults = dict(shards=str(setup["shards"]), base=str(setup["base"]), run=str(setup["run"]),
                    out=str(setup["out"]), max_samples=None, batch_size=4, quiet=True)  # fmt: skip
    return EvalConfig(**{**defaults, **kw})


def scores_of(report: dict) -> dict:
    return {
        r["label"]: {
            mode: {b: (c["correct"], c["total"]) for b, c in table.items()}
            for mode, table in r["scores"].items()
        }
        for r in report["results"]
    }


@pytest.fixture
def no_plot(monkeypatch):
    """Tests about scores and the cache skip drawing eval.png (the slowest part of a tiny evaluation)."""
    monkeypatch.setattr(eval_run, "plot_report", lambda report, path: None)


@pytest.fixture
def count_evals(monkeypatch):
    calls: list[int] = []
    real = eval_run.evaluate_model

    def counting(model, *args, **kwargs):
        calls.append(1)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(eval_run, "evaluate_model", counting)
    return calls


# ----------------------------------------------------------------------------------------- end to end


def test_run_eval_end_to_end(setup, capsys):
    report = run_eval(config(setup, quiet=False))
    assert [(r["label"], r["step"]) for r in report["results"]] == [
        ("base", 0),
        ("step 10", 10),
        ("step 20", 20),
    ]
    assert scores_of(report) == EXPECTED
    assert report["samples"] == {"easy": 6, "medium": 4, "hard": 3}
    assert report["buckets"] == {"easy": 0.5, "medium": 1.0, "hard": 1.5}
    assert report["train_reward"] == [(10, 0.25), (20, 0.5)]

    saved = json.loads((setup["out"] / "eval.json").read_text())  # strict JSON: no NaN anywhere
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    assert saved["train_reward"] == [[10, 0.25], [20, 0.5]]
    assert saved["config"]["modes"] == ["ntp", "reasoning"] and saved["config"]["max_samples"] is None
    assert saved["results"][2]["scores"]["reasoning"]["medium"] == {
        "correct": 3,
        "total": 4,
        "accuracy": 0.75,
    }

    png = setup["out"] / "eval.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    table = format_table(report)
    assert table in printed
    lines = table.splitlines()
    assert "easy >=0.5" in lines[0] and "medium >=1.0" in lines[0] and "hard >=1.5" in lines[0]
    rows = {tuple(line.split()[:-3]): line.split()[-3:] for line in lines[2:-1]}
    assert rows[("step", "20", "ntp")] == ["50.00%", "50.00%", "66.67%"]
    assert rows[("step", "20", "reasoning")] == ["66.67%", "75.00%", "66.67%"]
    assert rows[("base", "ntp")] == ["0.00%", "0.00%", "0.00%"]
    assert lines[-1] == "positions per bucket: easy=6, medium=4, hard=3"
    assert "wrote" in printed


def test_quiet_prints_nothing(setup, no_plot, capsys):
    run_eval(config(setup, modes=["ntp"]))
    assert capsys.readouterr().out == ""


def test_extra_models_and_modes(setup, tok):
    extra = save_model(tok, FULL, setup["root"] / "other")
    report = run_eval(config(setup, base=None, run=None, models=[str(extra)], modes=["reasoning"]))
    (result,) = report["results"]
    assert (result["label"], result["step"]) == ("other", None)
    assert scores_of(report) == {"other": {"reasoning": EXPECTED["step 20"]["reasoning"]}}
    assert (setup["out"] / "eval.png").is_file()  # no stepped model: an empty plot, not a crash


def test_empty_bucket_is_null_in_json(setup):
    report = run_eval(config(setup, base=None, run=None, models=[str(setup["base"])], modes=["ntp"]))
    assert report["samples"]["hard"] == 3
    easy_only = [shard_row(f"e{i}", "x", ["y"], 0.7, position=i) for i in range(4)]
    write_shard(setup["shards"] / "val" / shard_name("val", 0, 0), rows_to_table(easy_only))
    report = run_eval(config(setup, modes=["ntp"]))
    assert report["samples"] == {"easy": 4, "medium": 0, "hard": 0}
    hard = json.loads((setup["out"] / "eval.json").read_text())["results"][0]["scores"]["ntp"]["hard"]
    assert hard == {"correct": 0, "total": 0, "accuracy": None}
    assert "n/a" in format_table(report)


def test_max_samples_bounds_every_bucket(setup, no_plot):
    rows = [shard_row(f"d{i}", "x", ["y"], e, position=i) for i, e in enumerate([0.6, 1.2, 1.8] * 10)]
    write_shard(setup["shards"] / "val" / shard_name("val", 0, 0), rows_to_table(rows))
    report = run_eval(config(setup, max_samples=4, modes=["ntp"]))
    assert report["samples"] == {"easy": 4, "medium": 4, "hard": 4}
    for result in report["results"]:
        assert {b: c["total"] for b, c in result["scores"]["ntp"].items()} == report["samples"]
    # Step 20 maps "x" -> "y": every chosen position is right.
    assert [c["accuracy"] for c in report["results"][2]["scores"]["ntp"].values()] == [1.0, 1.0, 1.0]


# -------------------------------------------------------------------------------------------- the cache


def test_second_run_reevaluates_nothing(setup, no_plot, count_evals):
    first = run_eval(config(setup))
    assert len(count_evals) == 3
    second = run_eval(config(setup))
    assert len(count_evals) == 3
    assert second["results"] == first["results"]


def test_only_new_or_changed_checkpoints_are_evaluated(setup, no_plot, tok, count_evals):
    run_eval(config(setup))
    assert len(count_evals) == 3
    save_step(tok, FULL, setup["run"] / "checkpoints" / "step-000030")
    save_step(tok, {"q": "z"}, setup["run"] / "checkpoints" / "step-000010")  # retrained weights
    report = run_eval(config(setup))
    assert len(count_evals) == 5
    assert [r["label"] for r in report["results"]] == ["base", "step 10", "step 20", "step 30"]
    assert scores_of(report)["step 30"] == EXPECTED["step 20"]
    assert scores_of(report)["step 10"]["ntp"]["easy"] == (1, 6)  # only row E ("q" -> "z") is right now


def test_changed_settings_or_data_reevaluate_everything(setup, no_plot, count_evals):
    run_eval(config(setup))
    run_eval(config(setup, max_samples=2))
    assert len(count_evals) == 6
    run_eval(config(setup, max_samples=2, quiet=False, batch_size=4))  # quiet does not matter
    assert len(count_evals) == 6
    changed = [*ROWS[:-1], shard_row("G", "yp", ["zz"], 1.7)]
    write_shard(setup["shards"] / "val" / shard_name("val", 0, 0), rows_to_table(changed))
    report = run_eval(config(setup, max_samples=2))
    assert len(count_evals) == 9
    assert report["data_fingerprint"] != ""


def test_an_interrupted_evaluation_keeps_the_finished_models(setup, no_plot, monkeypatch):
    real = eval_run.evaluate_model
    calls: list[int] = []

    def dies_on_the_third(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, *args, **kwargs)

    monkeypatch.setattr(eval_run, "evaluate_model", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_eval(config(setup))
    partial = json.loads((setup["out"] / "eval.json").read_text())
    assert [r["label"] for r in partial["results"]] == ["base", "step 10"]
    report = run_eval(config(setup))
    assert len(calls) == 4  # only step 20 again
    assert scores_of(report) == EXPECTED


def test_a_partial_save_keeps_cached_models_not_reached_yet(setup, tok, no_plot, monkeypatch):
    run_eval(config(setup))
    save_step(tok, FULL, setup["run"] / "checkpoints" / "step-000005")  # evaluated first, then saved
    save_step(tok, FULL, setup["run"] / "checkpoints" / "step-000030")  # evaluated last: crashes
    real = eval_run.evaluate_model

    def dies_on_step_30(model, *args, **kwargs):
        dies_on_step_30.calls += 1
        if dies_on_step_30.calls == 2:
            raise KeyboardInterrupt
        return real(model, *args, **kwargs)

    dies_on_step_30.calls = 0
    monkeypatch.setattr(eval_run, "evaluate_model", dies_on_step_30)
    with pytest.raises(KeyboardInterrupt):
        run_eval(config(setup))
    partial = json.loads((setup["out"] / "eval.json").read_text())
    assert sorted(r["label"] for r in partial["results"]) == ["base", "step 10", "step 20", "step 5"]


def test_a_model_listed_differently_keeps_its_cached_scores_but_takes_the_new_label(
    setup, no_plot, count_evals
):
    run_eval(config(setup, base=None, run=None, models=[str(setup["base"])]))
    report = run_eval(config(setup, run=None))
    assert len(count_evals) == 1
    assert [(r["label"], r["step"]) for r in report["results"]] == [("base", 0)]


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shards": "missing-dir"}, "no val/ shards under missing-dir"),
        ({"modes": ["ntp", "guess"]}, "modes must be one of ntp, reasoning, got 'guess'"),
        ({"base": None, "run": None}, "nothing to evaluate"),
        ({"split": "test"}, "no test/ shards"),
    ],
)
def test_user_errors(setup, change, message):
    with pytest.raises(RptError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_eval(config(setup, **change))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 0}, "batch-size must be >= 1, got 0"),
        ({"max_samples": 0}, "max-samples must be >= 1, got 0"),
        ({"temperature": -0.5}, "temperature must be >= 0"),
        ({"max_new_tokens": 0}, "max-new-tokens must be >= 1"),
    ],
)
def test_bad_settings_are_user_errors(setup, change, message):
    with pytest.raises(RptError, match=message):
        config(setup, **change)


def test_cli_bad_setting_is_one_line(setup):
    result = CliRunner().invoke(cli_main(), ["eval", str(setup["shards"]), "--batch-size", "0"])
    assert (result.exit_code, result.output) == (1, "error: batch-size must be >= 1, got 0\n")


def test_run_without_checkpoints_is_an_error(setup):
    empty = setup["root"] / "empty-run"
    empty.mkdir()
    with pytest.raises(RptError, match="no checkpoints under"):
        run_eval(config(setup, run=str(empty)))


def test_no_position_reaches_a_bucket(setup):
    write_shard(setup["shards"] / "val" / shard_name("val", 0, 0), rows_to_table(ROWS[:1]))
    with pytest.raises(RptError, match="entropy >= 0.5"):
        run_eval(config(setup))


def test_tokenizer_must_match_the_shards(setup, no_plot, tok):
    manifest = setup["shards"] / MANIFEST_NAME
    manifest.write_text(json.dumps({"tokenizer_base_vocab_fingerprint": "0" * 64}))
    with pytest.raises(RptError, match="another tokenizer"):
        run_eval(config(setup))
    manifest.write_text(json.dumps({"tokenizer_base_vocab_fingerprint": tok.base_vocab_fingerprint}))
    assert len(run_eval(config(setup))["results"]) == 3


# --------------------------------------------------------------------------------------------------- CLI


def cli_main() -> click.Group:
    from rpt_train.cli import main  # imported here so a broken CLI fails these tests only

    return main


def test_cli_eval(setup):
    out = setup["root"] / "cli-eval"
    args = ["eval", str(setup["shards"]), "--base", str(setup["base"]), "--run", str(setup["run"]),
            "--out", str(out), "--mode", "ntp", "--max-samples", "5", "--batch-size", "2"]  # fmt: skip
    result = CliRunner().invoke(cli_main(), args)
    assert result.exit_code == 0, result.output
    assert "positions per bucket: easy=5, medium=4, hard=3" in result.output
    saved = json.loads((out / "eval.json").read_text())
    assert saved["config"]["modes"] == ["ntp"] and saved["config"]["max_samples"] == 5
    assert [r["label"] for r in saved["results"]] == ["base", "step 10", "step 20"]
    assert list(saved["results"][2]["scores"]) == ["ntp"]
    assert (out / "eval.png").is_file()


def test_cli_eval_reads_the_recipe(setup):
    recipe = setup["root"] / "recipe.toml"
    recipe.write_text(
        '[train]\ntemplate = "plain"\nanswer_tokens = 2\nlr = 1e-6\n\n[eval]\nmax_samples = 3\n'
    )
    out = setup["root"] / "cli-recipe"
    args = ["eval", str(setup["shards"]), "--config", str(recipe), "--base", str(setup["base"]),
            "--out", str(out), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli_main(), args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # (stderr warns: these hand-made shards have no manifest to check)
    cfg = json.loads((out / "eval.json").read_text())["config"]
    assert (cfg["answer_tokens"], cfg["max_samples"], cfg["template"]) == (2, 3, "plain")
    result = CliRunner().invoke(cli_main(), [*args, "--max-samples", "4"])  # the command line wins
    assert json.loads((out / "eval.json").read_text())["config"]["max_samples"] == 4


def test_cli_eval_missing_shards_is_one_line(setup, tmp_path):
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(cli_main(), ["eval", str(missing), "--base", str(setup["base"])])
    assert result.exit_code == 1
    assert result.output == f"error: no val/ shards under {missing} (no such directory)\n"
    assert "Traceback" not in result.output


def test_cli_eval_rejects_unknown_mode(setup):
    result = CliRunner().invoke(cli_main(), ["eval", str(setup["shards"]), "--mode", "vibes"])
    assert result.exit_code == 2 and "vibes" in result.output
