"""Choosing training positions by pass rate: which rows a band keeps (by hand), the side file refused for
other shards or another split, and ``rpt-train run --pass-rates`` end to end (only kept rows are trained
on, the counts land in the run directory, a changed selection cannot resume)."""

from __future__ import annotations

import json

import pytest
import torch

from rpt_core.runtime.errors import RptError
from rpt_train.passrate.estimate import Band, pass_at_k
from rpt_train.passrate.selection import (
    SIDE_FILE,
    load_selection,
    select,
    shard_keys,
    split_fingerprint,
    write_side_file,
)
from rpt_train.rl.config import TrainConfig
from rpt_train.rl.trainer import Trainer
from tests.helpers import save_model_dir, tiny_tokenizer, write_task_shards
from tests.helpers.runs import task_config

K = 8


def scored(doc_id: str, position: int, n_correct: int, p_true: float, token_id: int = 0) -> dict:
    return {
        "doc_id": doc_id,
        "position": position,
        "token_id": token_id,
        "entropy": 1.0,
        "span_class": None,
        "p_true": p_true,
        "ntp": False,
        "greedy": False,
        "n_correct": n_correct,
        "k": K,
        "pass1": n_correct / K,
        "passk": pass_at_k(K, n_correct, K),
    }


# doc, n_correct of 8, p_true
HAND = [("a", 0, 0.0), ("b", 8, 0.9), ("c", 1, 0.2), ("d", 4, 0.1), ("e", 6, 0.7), ("f", 7, 0.3)]


def hand_keys() -> list[tuple[str, int, int]]:
    return [(d, 5, 0) for d, *_ in HAND] + [("g", 5, 0)]  # g is in the split but was not scored


def test_band_and_margin_on_a_hand_table():
    rows = [scored(d, 5, c, p) for d, c, p in HAND]
    default = select(rows, hand_keys(), Band())
    assert sorted(k[0] for k in default.kept) == ["c", "d", "e", "f"]
    assert default.counts == {
        "rows": 7,
        "kept": 4,
        "below_band": 1,
        "above_band": 1,
        "margin": 0,
        "unscored": 1,
    }
    # pass@1 - p_true: c 0.125 - 0.2 < 0, d 0.5 - 0.1 = 0.4, e 0.75 - 0.7 = 0.05, f 0.875 - 0.3 = 0.575
    margin = select(rows, hand_keys(), Band(margin=0.1))
    assert sorted(k[0] for k in margin.kept) == ["d", "f"] and margin.counts["margin"] == 2
    narrow = select(rows, hand_keys(), Band(above=0.125, below=0.875))  # strict: c and f are out
    assert sorted(k[0] for k in narrow.kept) == ["d", "e"]
    assert narrow.keeps({"doc_id": "d", "position": 5}) and not narrow.keeps({"doc_id": "d", "position": 6})


def test_a_score_for_another_token_is_refused():
    with pytest.raises(RptError, match=r"scored for token 3, the shard's is 0"):
        select([scored("a", 5, 1, 0.0, token_id=3)], [("a", 5, 0)], Band())


def test_fingerprint_ignores_order_and_refuses_duplicates():
    assert split_fingerprint([("a", 1, 0), ("b", 2, 0)]) == split_fingerprint([("b", 2, 0), ("a", 1, 0)])
    assert split_fingerprint([("a", 1, 0)]) != split_fingerprint([("a", 1, 1)])
    with pytest.raises(RptError, match="not unique"):
        split_fingerprint([("a", 1, 0), ("a", 1, 2)])


# ------------------------------------------------------------------------- the run, with a side file


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    tok = tiny_tokenizer()
    shards = write_task_shards(root / "shards", tok, n_train=64, n_val=8)
    keys = list(shard_keys(str(shards), "train"))
    # Every third training row is scored 4 of 8 (in the band); the others 0 of 8; the last 8 unscored.
    rows = [scored(d, p, 4 if i % 3 == 0 else 0, 0.1, t) for i, (d, p, t) in enumerate(keys[:-8])]
    side = root / "scores"
    meta = {"split": "train", "k": K, "fingerprint": split_fingerprint(keys)}
    write_side_file(side / SIDE_FILE, rows, meta)
    kept = {(d, p) for i, (d, p, _) in enumerate(keys[:-8]) if i % 3 == 0}
    return {
        "tok": tok,
        "shards": shards,
        "model": save_model_dir(root / "model", tok),
        "side": side,
        "kept": kept,
        "root": root,
    }


def config(task, out, **kw) -> TrainConfig:
    run = dict(max_steps=3, num_generations=2, micro_batch_size=8, pass_rates=str(task["side"]))
    return task_config(task["shards"], task["model"], out, **{**run, **kw})


def test_a_run_trains_only_on_kept_positions_and_records_the_counts(task, tmp_path):
    torch.set_num_threads(1)
    trainer = Trainer(config(task, tmp_path / "run", max_steps=12))  # 48 rows: more than the 19 kept
    seen = []
    rows = trainer._rows
    trainer._rows = (seen.append((r["doc_id"], r["position"])) or r for r in rows)
    result = trainer.train()
    assert result.step == 12 and seen
    assert set(seen) <= task["kept"] and set(seen) == task["kept"]  # every kept row, and nothing else
    record = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert record["counts"] == {
        "rows": 64,
        "kept": 19,
        "below_band": 37,
        "above_band": 0,
        "margin": 0,
        "unscored": 8,
    }
    assert record["band"] == {"above": 0.0, "below": 1.0, "margin": None}
    saved = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert saved["pass_rates"] == str(task["side"])

    with pytest.raises(RptError, match="pass-margin: None -> 0.5"):  # an identity option: refused
        Trainer(config(task, tmp_path / "run", max_steps=14, resume=True, pass_margin=0.5))
    resumed = Trainer(config(task, tmp_path / "run", max_steps=14, resume=True)).train()
    assert resumed.step == 14


def test_side_files_of_other_shards_or_splits_are_refused(task, tmp_path):
    other = write_task_shards(tmp_path / "other", task["tok"], n_train=32, n_val=8)
    with pytest.raises(RptError, match="pass rates of other shards"):
        load_selection(str(task["side"]), str(other), Band())
    meta = {"split": "val", "k": K, "fingerprint": "x"}
    write_side_file(tmp_path / "val" / SIDE_FILE, [], meta)
    with pytest.raises(RptError, match="pass rates of the val split"):
        load_selection(str(tmp_path / "val"), str(task["shards"]), Band())
    with pytest.raises(RptError, match="no pass-rate file"):
        load_selection(str(tmp_path / "nothing"), str(task["shards"]), Band())
    with pytest.raises(RptError, match="keeps no training position"):
        Trainer(config(task, tmp_path / "run", pass_margin=0.5))  # 0.5 - 0.1 < 0.5 everywhere


def test_the_band_must_be_open():
    with pytest.raises(RptError, match="must be below --pass-below"):
        TrainConfig.from_flat(shards="s", pass_rates="p", pass_above=0.5, pass_below=0.5)
    TrainConfig.from_flat(shards="s", pass_above=0.5, pass_below=0.5)  # no --pass-rates: the band is unused
