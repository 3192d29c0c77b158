"""Tests for rpt_train.pretrain and ``rpt-train pretrain``: the learning-rate schedule, batch windows and the
loss by hand, and a micro corpus on which ~60 steps of pretraining clearly lower the held-out loss."""

from __future__ import annotations

import io
import json
import math
import sys
from functools import partial

import click
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from rpt_core.data.corpus import ReadStats
from rpt_core.data.corpus.documents import content_id
from rpt_core.data.shards import Manifest
from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import Tokenizer
from rpt_data.synth.families import dump_record, generate_records
from rpt_data.tokenizer_train import train_tokenizer
from rpt_train.pretrain import PretrainConfig, eval_loss, lm_loss, lr_at, pretrain, sample_batch, token_stream
from tests import helpers

VOCAB = 384


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A few hundred generated records as a .jsonl corpus and a small tokenizer trained on them."""
    root = tmp_path_factory.mktemp("micro")
    records = list(generate_records(300, seed=0))
    (root / "corpus.jsonl").write_text("".join(dump_record(r) for r in records), encoding="utf-8")
    raw = train_tokenizer((r["problem"] + "\n\n" + r["solution"] for r in records), vocab_size=VOCAB)
    (root / "tokenizer.json").write_text(raw.to_str(), encoding="utf-8")
    return {"root": root, "corpus": str(root / "corpus.jsonl"), "tokenizer": str(root / "tokenizer.json")}


tiny_model = partial(helpers.tiny_model, 50, layers=1, heads=2, kv_heads=1, head_dim=16, positions=2048)


def no_autocast():
    return torch.autocast("cpu", enabled=False)


# ------------------------------------------------------------------------------------------ lr schedule


def test_lr_warmup_then_cosine_to_the_floor():
    cfg = PretrainConfig(lr=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(4, cfg) == pytest.approx(5e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # the cosine starts at the peak
    assert lr_at(60, cfg) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half way: halfway between peak and floor
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    assert lr_at(500, cfg) == pytest.approx(1e-4)  # never below the floor
    decay = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))


def test_lr_without_warmup():
    cfg = PretrainConfig(lr=2e-3, warmup_steps=0, max_steps=10, min_lr_ratio=0.0)
    assert lr_at(0, cfg) == pytest.approx(2e-3)
    assert lr_at(5, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------- batches


def test_sample_batch_windows_are_contiguous_and_cover_the_stream():
    stream = np.arange(20, dtype=np.int32)
    batch = sample_batch(stream, 500, 6, np.random.default_rng(0))
    assert batch.shape == (500, 7) and batch.dtype == torch.int64
    assert torch.equal(batch - batch[:, :1], torch.arange(7).expand(500, 7))  # consecutive tokens
    starts = set(batch[:, 0].tolist())
    assert starts == set(range(20 - 7 + 1))  # every start that fits, including the last one
    again = sample_batch(stream, 500, 6, np.random.default_rng(0))
    assert torch.equal(batch, again)


def test_sample_batch_of_a_stream_exactly_one_window_long():
    stream = np.arange(5, dtype=np.int32)
    assert sample_batch(stream, 3, 4, np.random.default_rng(1)).tolist() == [[0, 1, 2, 3, 4]] * 3


# -------------------------------------------------------------------------------------------------- loss


def test_lm_loss_is_next_token_cross_entropy():
    model = tiny_model()
    batch = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(0))
    logits = model(batch[:, :-1])  # (3, 8, 50)
    logp = F.log_softmax(logits, -1)
    manual = -logp.gather(-1, batch[:, 1:, None]).mean()
    assert lm_loss(model, batch).item() == pytest.approx(manual.item(), rel=1e-6)
    # Not shifted by one: scoring each token against itself gives a different number.
    unshifted = -logp.gather(-1, batch[:, :-1, None]).mean()
    assert abs(unshifted.item() - manual.item()) > 1e-4


def test_uniform_model_has_loss_log_vocab():
    model = tiny_model(tie=False)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    batch = torch.randint(0, 50, (2, 5))
    assert lm_loss(model, batch).item() == pytest.approx(math.log(50), rel=1e-6)
    stream = np.arange(100, dtype=np.int32) % 50
    assert eval_loss(model, stream, 16, no_autocast) == pytest.approx(math.log(50), rel=1e-6)
    # A held-out stream shorter than one window is still scored; a single token cannot be.
    assert eval_loss(model, stream[:10], 64, no_autocast) == pytest.approx(math.log(50), rel=1e-6)
    assert math.isnan(eval_loss(model, stream[:1], 64, no_autocast))
    assert model.training  # eval_loss puts the model back in training mode


def test_eval_loss_uses_consecutive_windows():
    model = tiny_model()
    stream = (np.arange(70, dtype=np.int64) * 7) % 50
    windows = torch.from_numpy(np.stack([stream[i * 16 : i * 16 + 17] for i in range(4)]))
    with torch.no_grad():
        expected = lm_loss(model, windows).item()
    assert eval_loss(model, stream, 16, no_autocast) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------------------- token stream


def test_token_stream_joins_documents_with_end_of_text(micro, tmp_path):
    records = list(generate_records(3, seed=5))
    corpus = tmp_path / "three.jsonl"
    corpus.write_text("".join(dump_record(r) for r in records) + "{not json\n", encoding="utf-8")
    tok = Tokenizer.load(micro["tokenizer"])
    stats = ReadStats()
    stream = token_stream(PretrainConfig(corpus=[str(corpus)]), tok, stats)
    expected = []
    for r in records:
        expected += [*tok.encode(r["problem"] + "\n\n" + r["solution"]), tok.pad_id]
    assert stream.dtype == np.int32 and stream.tolist() == expected
    assert stats.documents_yielded == 3 and sum(stats.skipped.values()) == 1
    held = content_id(records[0]["problem"] + "\n\n" + records[0]["solution"])  # --exclude-val's copies
    corpus.write_text("".join(dump_record(r) for r in [records[0], *records]), encoding="utf-8")
    stats = ReadStats()
    assert token_stream(PretrainConfig(corpus=[str(corpus)]), tok, stats, frozenset({held})).tolist() == [
        *tok.encode(records[1]["problem"] + "\n\n" + records[1]["solution"]),
        tok.pad_id,
        *tok.encode(records[2]["problem"] + "\n\n" + records[2]["solution"]),
        tok.pad_id,
    ]
    assert stats.skipped["held_out_for_val"] == 2


# ------------------------------------------------------------------------------------ micro pretraining


def test_pretraining_lowers_the_loss_on_a_micro_corpus(micro, tmp_path):
    out = tmp_path / "base"
    cfg = PretrainConfig(
        corpus=[micro["corpus"]],
        tokenizer=micro["tokenizer"],
        out=str(out),
        seq_len=64,
        batch_size=4,
        max_steps=60,
        warmup_steps=10,
        eval_every=20,
        quiet=True,
        device="cpu",
    )
    summary = pretrain(cfg)
    tok = Tokenizer.load(micro["tokenizer"])
    vocab = tok.vocab_size
    assert vocab == VOCAB

    history = summary["history"]
    assert [h["step"] for h in history] == [20, 40, 60]
    losses = [h["eval_loss"] for h in history]
    assert losses[0] > losses[1] > losses[2]
    # A fresh model sits at the uniform level ln(V) ~ 5.95 nats; 60 steps must get well below it.
    assert losses[-1] < math.log(vocab) - 1.5, losses

    # The output is a Hugging Face-format directory with the tokenizer beside the weights.
    model = Qwen3ForCausalLM.from_pretrained(out, device="cpu")
    assert model.config.vocab_size == vocab and model.config.pad_token_id == tok.pad_id
    assert Tokenizer.load(out).fingerprint == tok.fingerprint
    saved = json.loads((out / "pretrain_summary.json").read_text())
    assert saved["history"] == history and saved["config"]["max_steps"] == 60
    assert saved["parameters"] == model.num_parameters() == summary["parameters"]
    assert summary["documents_read"] == 300 and summary["documents_skipped"] == {}
    # OUT/metrics.jsonl: one line per eval point, in the format of `rpt-train run`'s.
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [{k: r[k] for k in ("step", "train_loss", "eval_loss")} for r in rows] == history
    assert [r["lr"] for r in rows] == [pytest.approx(lr_at(h["step"] - 1, cfg)) for h in history]
    assert all(r["tokens_per_s"] > 0 and "time" in r for r in rows)

    # The saved weights are the trained ones: they reproduce the final held-out loss, and a fresh model
    # of the same shape scores the uniform level on the same held-out tokens.
    stream = token_stream(cfg, tok, ReadStats())
    held_out = stream[len(stream) - int(len(stream) * cfg.eval_fraction) :]

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast)

    assert eval_loss(model, held_out, cfg.seq_len, autocast) == pytest.approx(losses[-1], abs=1e-3)
    torch.manual_seed(0)
    fresh = Qwen3ForCausalLM(model.config)
    assert eval_loss(fresh, held_out, cfg.seq_len, autocast) == pytest.approx(math.log(vocab), abs=0.1)


def test_pretraining_is_reproducible_from_the_seed(micro, tmp_path):
    def run(name: str, seed: int) -> list:
        cfg = PretrainConfig(
            corpus=[micro["corpus"]],
            tokenizer=micro["tokenizer"],
            out=str(tmp_path / name),
            seq_len=32,
            batch_size=2,
            max_steps=4,
            eval_every=2,
            quiet=True,
            device="cpu",
            bf16_autocast=False,
            seed=seed,
        )
        return [(h["train_loss"], h["eval_loss"]) for h in pretrain(cfg)["history"]]

    first = run("a", 0)
    assert run("b", 0) == first
    assert run("c", 1) != first


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def four_steps(micro, out, quiet: bool = False) -> PretrainConfig:
    return PretrainConfig(
        corpus=[micro["corpus"]],
        tokenizer=micro["tokenizer"],
        out=str(out),
        seq_len=32,
        batch_size=2,
        max_steps=4,
        eval_every=2,
        quiet=quiet,
        device="cpu",
    )


def test_pretrain_shows_one_progress_line_on_a_tty(micro, tmp_path, monkeypatch, capsys):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    last = pretrain(four_steps(micro, tmp_path / "o"))["history"][-1]
    line = tty.getvalue().split("\r\033[K")[-1]  # the final state of the line
    values = f"loss {last['train_loss']:.3f} | eval_loss {last['eval_loss']:.3f}"
    assert line.startswith(f"pretrain | 4/4 steps (100%) | {values} | ") and line.endswith(" | ETA 00:00\n")
    assert " tok/s | elapsed " in line
    assert capsys.readouterr().out == ""  # no JSON lines


@pytest.mark.parametrize("tty, quiet", [(False, False), (True, True)], ids=["not-tty", "quiet"])
def test_pretrain_prints_nothing_off_a_tty_or_quiet(micro, tmp_path, monkeypatch, capsys, tty, quiet):
    monkeypatch.setattr(sys, "stderr", _Tty() if tty else io.StringIO())
    pretrain(four_steps(micro, tmp_path / "o", quiet))
    assert sys.stderr.getvalue() == "" and capsys.readouterr() == ("", "")


def test_pretrain_rerun_into_the_same_out_replaces_the_metrics(micro, tmp_path):
    for _ in range(2):
        pretrain(four_steps(micro, tmp_path / "o", quiet=True))
    rows = [json.loads(ln) for ln in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"corpus": []}, "no pretraining corpus"),
        ({"tokenizer": ""}, "--tokenizer is required"),
        ({"seq_len": 100_000}, "corpus too small"),
        ({"corpus": ["missing.jsonl"]}, "missing.jsonl"),
    ],
)
def test_pretrain_user_errors(micro, tmp_path, change, message):
    base = {
        "corpus": [micro["corpus"]],
        "tokenizer": micro["tokenizer"],
        "out": str(tmp_path / "o"),
        "quiet": True,
    }
    with pytest.raises(RptError, match=message):
        pretrain(PretrainConfig(**{**base, **change, "max_steps": 1}))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"eval_every": 0}, "eval-every must be >= 1, got 0"),
        ({"seq_len": 0}, "seq-len must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"eval_fraction": 1.0}, "eval-fraction must be < 1, got 1.0"),
    ],
)
def test_bad_settings_are_user_errors(change, message):
    with pytest.raises(RptError, match=message):
        PretrainConfig(**change)


# --------------------------------------------------------------------------------------------------- CLI


def cli_main() -> click.Group:
    from rpt_train.cli import main  # imported here so a broken CLI fails these tests only

    return main


def test_cli_pretrain_with_recipe(micro, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[pretrain]\nseq_len = 32\nbatch_size = 2\nmax_steps = 50\nwarmup_steps = 1\n")
    out = tmp_path / "cli-base"
    args = [
        "pretrain",
        micro["corpus"],
        "--config",
        str(recipe),
        "--tokenizer",
        micro["tokenizer"],
        "--out",
        str(out),
        "--max-steps",
        "3",
        "--no-bf16-autocast",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(cli_main(), args)
    assert result.exit_code == 0, result.output
    assert "pretrained" in result.output and f"-> {out}" in result.output
    cfg = json.loads((out / "pretrain_summary.json").read_text())["config"]
    assert (cfg["max_steps"], cfg["seq_len"], cfg["batch_size"], cfg["bf16_autocast"]) == (3, 32, 2, False)
    assert cfg["corpus"] == [micro["corpus"]]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_cli_pretrain_errors_are_one_line(micro, tmp_path):
    result = CliRunner().invoke(cli_main(), ["pretrain", micro["corpus"], "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert result.output == "error: --tokenizer is required (train one with `rpt-data tokenizer train`)\n"
    missing = tmp_path / "nope.jsonl"
    result = CliRunner().invoke(cli_main(), ["pretrain", str(missing), "--tokenizer", micro["tokenizer"]])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_continued_pretraining_starts_from_the_model_and_skips_held_out_documents(micro, tmp_path):
    base_cfg = dict(
        corpus=[micro["corpus"]],
        seq_len=32,
        batch_size=2,
        warmup_steps=0,
        eval_every=5,
        quiet=True,
        device="cpu",
    )
    base = pretrain(
        PretrainConfig(**base_cfg, tokenizer=micro["tokenizer"], out=str(tmp_path / "b"), max_steps=5)
    )
    shards = tmp_path / "shards"
    held_out = [f"corpus:{i}" for i in range(1, 151)]  # half of the 300 documents
    Manifest(val_doc_ids=held_out).write(shards)
    cpt = pretrain(
        PretrainConfig(
            **base_cfg,
            init=str(tmp_path / "b"),
            exclude_val=str(shards),
            out=str(tmp_path / "c"),
            max_steps=5,
        )
    )
    assert cpt["documents_skipped"] == {"held_out_for_val": 150}
    assert cpt["tokens_in_corpus"] < base["tokens_in_corpus"]
    assert cpt["history"][0]["eval_loss"] < base["history"][0]["eval_loss"] + 1.0  # not a fresh model
    fresh = math.log(Tokenizer.load(micro["tokenizer"]).vocab_size)
    assert cpt["history"][0]["train_loss"] < fresh - 0.5
    assert cpt["train_flops"] == 6 * cpt["parameters"] * 2 * 32 * 5  # rpt_train.compute


def test_match_flops_sets_the_steps_from_a_run(micro, tmp_path, monkeypatch):
    import rpt_train.pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "run_flops", lambda run: 3.5 * 6 * 64 * 50_000)
    cfg = PretrainConfig(
        corpus=[micro["corpus"]],
        tokenizer=micro["tokenizer"],
        out=str(tmp_path / "m"),
        seq_len=32,
        batch_size=2,
        max_steps=1,
        match_flops="some-run",
        quiet=True,
        device="cpu",
        preset="tiny",
    )
    model = Qwen3ForCausalLM(Qwen3Config.preset("tiny", vocab_size=VOCAB))
    summary = pretrain(cfg)
    expected = round(3.5 * 6 * 64 * 50_000 / (6 * model.num_parameters() * 64))
    assert summary["config"]["max_steps"] == max(1, expected)


def test_match_flops_needs_a_run_with_recorded_compute(tmp_path):
    from rpt_train.pretrain import run_flops

    with pytest.raises(RptError, match="no checkpoint"):
        run_flops(str(tmp_path))
