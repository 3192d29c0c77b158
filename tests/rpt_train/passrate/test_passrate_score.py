"""``rpt-train passrate`` on hand-made shards with a hand-set bigram model: exact per-position scores, the
side file keyed by row identity joined back to the shard rows, the summary by bucket and span class, the
sample of ``--max-samples``, and reruns that reuse the saved parts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rpt_core.data.shards import iter_rows, rows_to_table, shard_name, shard_paths, write_shard
from rpt_core.runtime.errors import RptError
from rpt_train.cli.passrate import passrate_cmd
from rpt_train.passrate.score import PassRateConfig, run_passrate
from rpt_train.passrate.selection import read_side_file
from tests.helpers import bigram_model, byte_tokenizer, shard_row

pytestmark = pytest.mark.usefixtures("one_thread")

TOK = byte_tokenizer()
# The model maps x -> y and p -> ab; every other last token gives uniform logits (argmax: token 0).
MAPPING = {"x": "y", "p": "ab"}
ROWS = [  # doc, context, true pieces, entropy; right (x -> y, p -> ab) or wrong
    shard_row("A", "x", ["y"], 0.2),  # right, below every bucket
    shard_row("B", "zx", ["y"], 0.7, position=2),  # right, easy
    shard_row("C", "q", ["z"], 1.2, position=1),  # wrong (q is unmapped), medium
    shard_row("D", "yp", ["ab"], 1.6, position=2),  # right, hard
    shard_row("E", "x", ["w"], 1.9),  # wrong: x -> y, the truth is w; hard
    shard_row("E", "xyp", ["q"], 2.0, position=3),  # same doc, other position: wrong, hard
    shard_row("F", "", ["a"], 1.0),  # empty context: skipped, as training skips it
]
RIGHT = {("A", 0), ("B", 2), ("D", 2)}


def write_split(root: Path, rows: list[dict], classes: list[str] | None = None) -> Path:
    table = rows_to_table(rows)
    path = root / "train" / shard_name("train", 0, 0)
    if classes is None:
        write_shard(path, table)
    else:  # a colleague's span_class column: a shard with one more column
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.append_column("span_class", pa.array(classes, pa.string())), path)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    bigram_model(TOK, MAPPING).save_pretrained(path)
    TOK.save(path)
    return path


def config(shards, model, out, **kw) -> PassRateConfig:
    base = dict(
        shards=str(shards),
        model=str(model),
        out=str(out),
        template="plain",
        samples=4,
        max_new_tokens=4,
        batch_size=4,
        quiet=True,
    )
    return PassRateConfig(**{**base, **kw})


def test_scores_each_position_exactly_and_keys_them_by_row_identity(tmp_path, model_dir):
    shards = write_split(tmp_path / "shards", ROWS)
    summary = run_passrate(config(shards, model_dir, tmp_path / "out"))
    scored, meta = read_side_file(tmp_path / "out")
    assert meta["split"] == "train" and meta["k"] == 4 and summary["skipped_empty_context"] == 1
    shard_rows = {(r["doc_id"], r["position"]): r for r in iter_rows(shard_paths(shards, "train"))}
    assert len(scored) == 6 and len({(r["doc_id"], r["position"]) for r in scored}) == 6
    for r in scored:
        key = (r["doc_id"], r["position"])
        truth = shard_rows[key]  # the side file joins back to its shard row
        assert r["token_id"] == truth["token_id"] and r["entropy"] == pytest.approx(truth["entropy"])
        right = key in RIGHT
        assert r["ntp"] is right and r["greedy"] is right
        assert r["n_correct"] == (4 if right else 0) and r["pass1"] == float(right)
        assert r["passk"] == float(right)
        if right:  # logit 10 * sqrt(32) against 0: probability ~1
            assert r["p_true"] > 0.999
        else:  # uniform over the vocabulary after an unmapped token (or ~0 for a wrong mapped one)
            assert r["p_true"] < 1.01 / TOK.vocab_size
    groups = summary["groups"]
    assert groups["all"]["n"] == 6 and groups["all"]["pass1"] == pytest.approx(0.5)
    assert (groups["easy"]["n"], groups["medium"]["n"], groups["hard"]["n"]) == (5, 4, 3)
    assert groups["hard"]["ntp"] == pytest.approx(1 / 3)
    assert not any(name.startswith("class ") for name in groups)  # these shards have no span_class
    assert summary["preview"]["0 < pass@1 < 1"] == 0  # every position is all right or all wrong
    cfg = json.loads((tmp_path / "out" / "passrate_config.json").read_text())
    assert cfg["samples"] == 4 and cfg["template"] == "plain"


def test_groups_by_span_class_when_the_shards_have_one(tmp_path, model_dir):
    classes = ["given", "computed", "text", "computed", "computed", "given", "text"]
    shards = write_split(tmp_path / "shards", ROWS, classes)
    summary = run_passrate(config(shards, model_dir, tmp_path / "out"))
    g = summary["groups"]
    assert {n: g[n]["n"] for n in g if n.startswith("class ")} == {
        "class computed": 3,
        "class given": 2,
        "class text": 1,
    }
    assert g["class computed"]["pass1"] == pytest.approx(2 / 3)  # B and D right, E wrong
    scored, _ = read_side_file(tmp_path / "out")
    assert {(r["doc_id"], r["position"]): r["span_class"] for r in scored}[("D", 2)] == "computed"


def test_max_samples_picks_the_same_positions_and_a_rerun_scores_nothing(tmp_path, model_dir):
    shards = write_split(tmp_path / "shards", ROWS)
    first = run_passrate(config(shards, model_dir, tmp_path / "a", max_samples=3))
    again = run_passrate(config(shards, model_dir, tmp_path / "a", max_samples=3))
    other = run_passrate(config(shards, model_dir, tmp_path / "b", max_samples=3))
    assert first["positions"] == 3 and first["scored_now"] == 3 and again["scored_now"] == 0
    keys = [sorted((r["doc_id"], r["position"]) for r in read_side_file(tmp_path / d)[0]) for d in "ab"]
    assert keys[0] == keys[1]
    assert first["groups"] == again["groups"] == other["groups"]
    changed = run_passrate(config(shards, model_dir, tmp_path / "a", max_samples=3, samples=2))
    assert changed["scored_now"] == 3  # other settings: the saved parts are not reused


def test_duplicate_rows_are_refused(tmp_path, model_dir):
    shards = write_split(tmp_path / "shards", [ROWS[0], ROWS[0]])
    with pytest.raises(RptError, match="share doc_id 'A' and position 0"):
        run_passrate(config(shards, model_dir, tmp_path / "out"))


def test_cli_prints_the_gates_and_takes_train_settings_from_the_recipe(tmp_path, model_dir):
    shards = write_split(tmp_path / "shards", ROWS)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[train]\ntemplate = "plain"\nmax_new_tokens = 4\n\n[passrate]\nsamples = 2\n')
    args = [str(shards), "--model", str(model_dir), "--out", str(tmp_path / "out"), "--config", str(recipe)]
    result = CliRunner().invoke(passrate_cmd, args)
    assert result.exit_code == 0, result.output
    assert "pass@1 [95% interval]" in result.output and "pass@2" in result.output
    assert "hard >=1.5" in result.output and "0 < pass@1 < 1" in result.output
    cfg = json.loads((tmp_path / "out" / "passrate_config.json").read_text())
    assert (cfg["template"], cfg["max_new_tokens"], cfg["samples"]) == ("plain", 4, 2)
    bad = CliRunner().invoke(
        passrate_cmd, [str(tmp_path / "no"), "--model", str(model_dir), "--out", str(tmp_path)]
    )
    assert bad.exit_code == 1 and "error: no train/ shards" in bad.output


def test_a_larger_sample_scores_only_the_new_positions(tmp_path, model_dir, monkeypatch):
    monkeypatch.setattr("rpt_train.passrate.score.CHUNK", 2)
    shards = write_split(tmp_path / "shards", ROWS)
    assert run_passrate(config(shards, model_dir, tmp_path / "a", max_samples=3))["scored_now"] == 3
    grown = run_passrate(config(shards, model_dir, tmp_path / "a", max_samples=5))
    assert grown["positions"] == 5 and grown["scored_now"] == 3  # chunk 0 kept; chunk 1 grew; chunk 2 new
    fresh = run_passrate(config(shards, model_dir, tmp_path / "b", max_samples=5))
    assert fresh["scored_now"] == 5
    assert read_side_file(tmp_path / "a")[0] == read_side_file(tmp_path / "b")[0]
