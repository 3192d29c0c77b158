"""Tests for rpt_train.eval.run and ``rpt-train eval``: a base model and a fake run with two checkpoints on
hand-made val shards -> exact scores in eval.json, the console table, eval.png, and the result cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

import rpt_train.eval.run as eval_run
from rpt_core.data.shards import MANIFEST_NAME, rows_to_table, shard_name, write_shard
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.eval.run import EvalConfig, format_table, run_eval
from rpt_train.rl.checkpoint import TRAINER_STATE
from tests.helpers import bigram_model, byte_tokenizer, shard_row

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
    "rpt": {  # the run's last checkpoint (step 20)
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
    return byte_tokenizer()


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
    defaults = dict(
        shards=str(setup["shards"]),
        base=str(setup["base"]),
        run=str(setup["run"]),
        out=str(setup["out"]),
        max_samples=None,
        batch_size=4,
        quiet=True,
    )
    return EvalConfig(**{**defaults, **kw})


def scores_of(table: list[dict]) -> dict:
    """{model: {mode: {bucket: (correct, n)}}} from the rows of eval.json."""
    out: dict = {}
    for r in table:
        out.setdefault(r["model"], {}).setdefault(r["mode"], {})[r["bucket"]] = (r["correct"], r["n"])
    return out


def models_of(table: list[dict]) -> list[tuple[str, int | None]]:
    return list(dict.fromkeys((r["model"], r["step"]) for r in table))


def cached_models(setup) -> int:
    return len(json.loads((setup["out"] / "eval_cache.json").read_text())["models"])


@pytest.fixture
def no_plot(monkeypatch):
    """Tests about scores and the cache skip drawing eval.png (the slowest part of a tiny evaluation)."""
    monkeypatch.setattr(eval_run, "plot_report", lambda table, summary, path: None)


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
    table = run_eval(config(setup, quiet=False))
    assert models_of(table) == [("base", 0), ("step 10", 10), ("rpt", 20)]
    assert scores_of(table) == EXPECTED
    summary = json.loads((setup["out"] / "eval_summary.json").read_text())
    assert summary["positions"] == {"easy": 6, "medium": 4, "hard": 3}
    assert summary["buckets"] == {"easy": 0.5, "medium": 1.0, "hard": 1.5}
    assert summary["train_reward"] == [[10, 0.25], [20, 0.5]]
    assert summary["config"]["modes"] == ["ntp", "reasoning"] and summary["config"]["max_samples"] is None

    saved = json.loads((setup["out"] / "eval.json").read_text())  # strict JSON: no NaN anywhere
    assert saved == json.loads(json.dumps(table))
    row = next(r for r in saved if (r["model"], r["mode"], r["bucket"]) == ("rpt", "reasoning", "medium"))
    assert (row["correct"], row["n"], row["accuracy"]) == (3, 4, 0.75)
    assert row["ci_low"] < 0.75 < row["ci_high"]
    # rpt reasoning vs base ntp on the same 4 medium positions: verdicts 1,1,1,0 against 0,0,0,0
    assert row["diff_vs_base_ntp"] == 0.75 and row["diff_ci_low"] < 0.75 < row["diff_ci_high"]
    assert row["diff_vs_base_same_mode"] == 0.75
    base_row = next(r for r in saved if r["model"] == "base")
    assert "diff_vs_base_ntp" not in base_row

    png = setup["out"] / "eval.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    text = format_table(table, summary)
    assert text in printed
    lines = text.splitlines()
    assert "easy >=0.5" in lines[1] and "medium >=1.0" in lines[1] and "hard >=1.5" in lines[1]
    assert lines[3].split()[:4] == ["base", "ntp", "0.0", "[0.0,"]
    rpt_line = next(line for line in lines if line.split()[:2] == ["rpt", "reasoning"])
    assert rpt_line.split()[2::3] == ["66.7", "75.0", "66.7"]  # easy, medium, hard accuracies
    assert lines[-1] == "positions per bucket: easy=6, medium=4, hard=3 (the same positions for every model)"
    assert "wrote" in printed


def test_quiet_prints_nothing(setup, no_plot, capsys):
    run_eval(config(setup, modes=["ntp"]))
    assert capsys.readouterr().out == ""


def test_extra_models_and_modes(setup, tok):
    extra = save_model(tok, FULL, setup["root"] / "other")
    table = run_eval(config(setup, base=None, run=None, models=[str(extra)], modes=["reasoning"]))
    assert models_of(table) == [("other", None)]
    assert scores_of(table) == {"other": {"reasoning": EXPECTED["rpt"]["reasoning"]}}
    assert all(r["diff_vs_base_ntp"] is None for r in table)  # no base to compare with
    assert (setup["out"] / "eval.png").is_file()  # no stepped model: an empty plot, not a crash


def test_sampled_mode_is_the_mean_of_k_seeded_rollouts(setup, no_plot):
    table = run_eval(config(setup, modes=["reasoning", "sampled"], samples=3, temperature=1e-3))
    # at a temperature near 0 every sample is the greedy rollout
    assert scores_of(table)["rpt"]["sampled"] == scores_of(table)["rpt"]["reasoning"]


def test_empty_bucket_is_null_in_json(setup):
    easy_only = [shard_row(f"e{i}", "x", ["y"], 0.7, position=i) for i in range(4)]
    write_shard(setup["shards"] / "val" / shard_name("val", 0, 0), rows_to_table(easy_only))
    table = run_eval(config(setup, modes=["ntp"]))
    hard = json.loads((setup["out"] / "eval.json").read_text())[2]
    assert (hard["bucket"], hard["n"], hard["accuracy"], hard["ci_low"]) == ("hard", 0, None, None)
    summary = json.loads((setup["out"] / "eval_summary.json").read_text())
    assert summary["positions"] == {"easy": 4, "medium": 0, "hard": 0}
    assert "n/a" in format_table(table, summary)


def test_max_samples_bounds_every_bucket(setup, no_plot):
    rows = [shard_row(f"d{i}", "x", ["y"], e, position=i) for i, e in enumerate([0.6, 1.2, 1.8] * 10)]
    write_shard(setup["shards"] / "val" / shard_name("val", 0, 0), rows_to_table(rows))
    table = run_eval(config(setup, max_samples=4, modes=["ntp"]))
    assert {r["n"] for r in table} == {4}
    # The last checkpoint maps "x" -> "y": every chosen position is right.
    assert [r["accuracy"] for r in table if r["model"] == "rpt"] == [1.0, 1.0, 1.0]


# -------------------------------------------------------------------------------------------- the cache


def test_second_run_reevaluates_nothing(setup, no_plot, count_evals):
    first = run_eval(config(setup))
    assert len(count_evals) == 3
    second = run_eval(config(setup))
    assert len(count_evals) == 3
    assert second == first


def test_a_new_mode_evaluates_only_that_mode(setup, no_plot, monkeypatch):
    run_eval(config(setup, modes=["ntp"]))
    asked = []
    real = eval_run.evaluate_model
    monkeypatch.setattr(
        eval_run,
        "evaluate_model",
        lambda m, t, r, s, modes, p: asked.append(modes) or real(m, t, r, s, modes, p),
    )
    run_eval(config(setup, modes=["ntp", "reasoning"]))
    assert asked == [["reasoning"]] * 3


def test_only_new_or_changed_checkpoints_are_evaluated(setup, no_plot, tok, count_evals):
    run_eval(config(setup))
    assert len(count_evals) == 3
    save_step(tok, FULL, setup["run"] / "checkpoints" / "step-000030")
    save_step(tok, {"q": "z"}, setup["run"] / "checkpoints" / "step-000010")  # retrained weights
    table = run_eval(config(setup))
    assert len(count_evals) == 5
    assert [m for m, _ in models_of(table)] == ["base", "step 10", "step 20", "rpt"]
    assert scores_of(table)["rpt"] == EXPECTED["rpt"]
    assert scores_of(table)["step 10"]["ntp"]["easy"] == (1, 6)  # only row E ("q" -> "z") is right now


def test_changed_settings_or_data_reevaluate_everything(setup, no_plot, count_evals):
    run_eval(config(setup))
    run_eval(config(setup, max_samples=2))
    assert len(count_evals) == 6
    run_eval(config(setup, max_samples=2, quiet=False, batch_size=4))  # quiet does not matter
    assert len(count_evals) == 6
    changed = [*ROWS[:-1], shard_row("G", "yp", ["zz"], 1.7)]
    write_shard(setup["shards"] / "val" / shard_name("val", 0, 0), rows_to_table(changed))
    run_eval(config(setup, max_samples=2))
    assert len(count_evals) == 9


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
    assert cached_models(setup) == 2 and not (setup["out"] / "eval.json").exists()
    table = run_eval(config(setup))
    assert len(calls) == 4  # only the last checkpoint again
    assert scores_of(table) == EXPECTED


def test_a_model_listed_differently_keeps_its_cached_scores_but_takes_the_new_label(
    setup, no_plot, count_evals
):
    run_eval(config(setup, base=None, run=None, models=[str(setup["base"])]))
    table = run_eval(config(setup, run=None))
    assert len(count_evals) == 1
    assert models_of(table) == [("base", 0)]


def test_a_checkpoint_pruned_by_the_running_run_is_skipped_with_a_note(setup, no_plot, monkeypatch, capsys):
    real = eval_run.discover_models

    def then_the_run_prunes(cfg):  # the run saves on and --keep-last removes step 10 under the evaluator
        found = real(cfg)
        shutil.rmtree(setup["run"] / "checkpoints" / "step-000010")
        return found

    monkeypatch.setattr(eval_run, "discover_models", then_the_run_prunes)
    table = run_eval(config(setup))
    assert models_of(table) == [("base", 0), ("rpt", 20)]
    step10 = setup["run"] / "checkpoints" / "step-000010"
    assert capsys.readouterr().err.endswith(
        f"warning: {step10}: pruned by its run (--keep-last) while this evaluation ran; skipped\n"
    )


def test_compute_comes_from_the_run_and_the_baseline(setup, tok, no_plot):
    lines = [{"step": 10, "reward": 0.1, "train_flops": 1e9}, {"step": 20, "reward": 0.2, "train_flops": 2e9}]
    (setup["run"] / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    cpt = save_model(tok, {"x": "y"}, setup["root"] / "cpt")
    (cpt / "pretrain_summary.json").write_text(json.dumps({"train_flops": 2e9}))
    table = run_eval(config(setup, cpt=str(cpt), modes=["ntp"]))
    flops = {r["model"]: r["flops"] for r in table}
    assert flops == {"base": 0.0, "cpt": 2e9, "step 10": 1e9, "rpt": 2e9}


def test_run_as_adds_another_run_beside_the_rpt_run(setup, tok):
    """``--run-as rlp=DIR``: an RLP run's checkpoints are evaluated on the same positions, labelled rlp."""
    other = setup["root"] / "rlp-run"
    save_step(tok, {"q": "z"}, other / "checkpoints" / "step-000005")
    save_step(tok, FULL, other / "checkpoints" / "step-000009")
    lines = [
        {"step": 5, "reward": -0.5, "train_flops": 1.5e9},
        {"step": 9, "reward": 0.25, "train_flops": 3e9},
    ]
    (other / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    table = run_eval(config(setup, run_as=[f"rlp={other}"]))
    assert models_of(table) == [("base", 0), ("step 10", 10), ("rpt", 20), ("rlp step 5", 5), ("rlp", 9)]
    assert scores_of(table)["rlp"] == EXPECTED["rpt"]  # the same weights score the same
    assert {r["model"]: r["run"] for r in table} == {
        "base": None,
        "step 10": "rpt",
        "rpt": "rpt",
        "rlp step 5": "rlp",
        "rlp": "rlp",
    }
    rlp = next(r for r in table if (r["model"], r["mode"], r["bucket"]) == ("rlp", "ntp", "hard"))
    assert (rlp["flops"], rlp["diff_vs_base_ntp"]) == (3e9, 2 / 3)  # paired with the base like rpt's rows
    summary = json.loads((setup["out"] / "eval_summary.json").read_text())
    assert summary["run_rewards"] == {"rlp": [[5, -0.5], [9, 0.25]]}
    assert summary["vs_rpt"]["rlp"]["ntp/hard"] == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert (setup["out"] / "eval.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("run_as", "message"),
    [
        (["rlp"], "--run-as takes LABEL=RUN_DIR"),
        (["rpt=x"], "label 'rpt' is taken"),
        (["rlp=x", "rlp=y"], "label 'rlp' is taken"),
    ],
)
def test_run_as_user_errors(setup, run_as, message):
    with pytest.raises(RptError, match=message):
        run_eval(config(setup, run_as=run_as))


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shards": "missing-dir"}, "no val/ shards under missing-dir"),
        ({"modes": ["ntp", "guess"]}, "modes must be one of ntp, reasoning, sampled, got 'guess'"),
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
    assert len(models_of(run_eval(config(setup)))) == 3


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
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["config"]["modes"] == ["ntp"] and summary["config"]["max_samples"] == 5
    saved = json.loads((out / "eval.json").read_text())
    assert [m for m, _ in models_of(saved)] == ["base", "step 10", "rpt"]
    assert {r["mode"] for r in saved} == {"ntp"}
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
    cfg = json.loads((out / "eval_summary.json").read_text())["config"]
    assert (cfg["answer_tokens"], cfg["max_samples"], cfg["template"]) == (2, 3, "plain")
    result = CliRunner().invoke(cli_main(), [*args, "--max-samples", "4"])  # the command line wins
    assert json.loads((out / "eval_summary.json").read_text())["config"]["max_samples"] == 4


def test_cli_eval_missing_shards_is_one_line(setup, tmp_path):
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(cli_main(), ["eval", str(missing), "--base", str(setup["base"])])
    assert result.exit_code == 1
    assert result.output == f"error: no val/ shards under {missing} (no such directory)\n"
    assert "Traceback" not in result.output


def test_cli_eval_rejects_unknown_mode(setup):
    result = CliRunner().invoke(cli_main(), ["eval", str(setup["shards"]), "--mode", "vibes"])
    assert result.exit_code == 2 and "vibes" in result.output


def test_each_model_is_prompted_in_its_own_chat_template(setup, no_plot, monkeypatch):
    """chat-think renders through the evaluated model's template (step 10's differs from the base's)."""
    template = "{% for m in messages %}<{{ name }}>{{ m['content'][-3:] }}{% endfor %}"
    for path, name in ((setup["base"], "base"), (setup["run"] / "checkpoints" / "step-000010", "ten")):
        config_file = {"chat_template": template.replace("{{ name }}", name)}
        (Path(path) / "tokenizer_config.json").write_text(json.dumps(config_file))
    prompts: dict[str, str] = {}
    real = eval_run.evaluate_model

    def recording(model, tok, rows, settings, modes, progress):
        prompts[str(tok.source)] = settings.template.render("ctx")
        return real(model, tok, rows, settings, modes, progress)

    monkeypatch.setattr(eval_run, "evaluate_model", recording)
    run_eval(config(setup, template="chat-think", modes=["reasoning"], max_new_tokens=2))
    by_dir = {Path(source).parent.name: prompt for source, prompt in prompts.items()}
    assert by_dir["base"] == "<base>ctx" and by_dir["step-000010"] == "<ten>ctx"
    assert by_dir["step-000020"].startswith("<|im_start|>user\n")  # no template: Qwen3's format


def test_a_model_whose_tokenizer_is_from_another_family_is_refused(setup):
    config_file = Path(setup["base"]) / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "bos_token_id": 128000}))
    with pytest.raises(RptError, match="bos_token_id 128000 but tokenizer .* different model families"):
        run_eval(config(setup, run=None))


def test_run_differences_pair_each_run_as_runs_last_checkpoint_with_the_rpt_runs():
    """Hand-checked: on 4 hard positions rlp is right on 3, rpt on 1, pairs (1,1) (1,0) (1,0) (0,0):
    d = 0, 1, 1, 0, mean 0.5, sd 0.577, half-width 1.96 * 0.577 / 2 = 0.566."""
    rows = [{"entropy": 2.0}] * 4
    entries = [
        eval_run.ModelEntry("base", Path("b"), verdicts={"ntp": [0, 0, 0, 0]}),
        eval_run.ModelEntry("rpt", Path("r"), verdicts={"ntp": [1, 0, 0, 0]}, run="rpt"),
        eval_run.ModelEntry("rlp step 5", Path("s"), verdicts={"ntp": [0, 0, 0, 0]}, run="rlp"),
        eval_run.ModelEntry("rlp", Path("l"), verdicts={"ntp": [1, 1, 1, 0]}, run="rlp"),
    ]
    cell = eval_run.run_differences(rows, entries)["rlp"]["ntp/hard"]
    assert cell["diff"] == 0.5
    assert cell["ci_low"] == pytest.approx(0.5 - 0.5658, abs=1e-3) and cell["ci_high"] == 1.0  # clipped
    assert eval_run.run_differences(rows, entries[:1] + entries[2:]) == {}  # no RPT run: nothing to pair


def test_cpt_differences_pair_each_runs_last_checkpoint_with_the_baselines_next_token():
    """Hand-checked: on 4 hard positions rpt's reasoning is right on 3 (1,1,1,0), cpt's next token on 1
    (1,0,0,0): d = 0, 1, 1, 0, mean 0.5, sd 0.577, half-width 1.96 * 0.577 / 2 = 0.566; an intermediate
    checkpoint is not paired."""
    rows = [{"entropy": 2.0}] * 4
    entries = [
        eval_run.ModelEntry("cpt", Path("c"), verdicts={"ntp": [1, 0, 0, 0], "reasoning": [1, 1, 1, 1]}),
        eval_run.ModelEntry("step 5", Path("s"), verdicts={"reasoning": [0, 0, 0, 0]}, run="rpt"),
        eval_run.ModelEntry("rpt", Path("r"), verdicts={"reasoning": [1, 1, 1, 0]}, run="rpt"),
    ]
    diffs = eval_run.cpt_differences(rows, entries)
    assert list(diffs) == ["rpt"]
    cell = diffs["rpt"]["reasoning/hard"]
    assert cell["diff"] == 0.5 and cell["ci_low"] == pytest.approx(0.5 - 0.5658, abs=1e-3)
    assert eval_run.cpt_differences(rows, entries[1:]) == {}  # no baseline: nothing to pair
