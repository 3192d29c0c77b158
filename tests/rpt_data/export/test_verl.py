"""``rpt-data export verl``: verl rows from shard rows, checked by hand and end to end through the CLI on
tiny shards (tests/helpers/shards.py) and on rows built with the real Qwen3 tokenizer."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rpt_core.data.shards import (
    ROW_GROUP_SIZE,
    iter_rows,
    rows_to_table,
    shard_name,
    shard_paths,
    write_shard,
)
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.files import sha256_file
from rpt_core.text.chat import render_chat
from rpt_core.text.prompts import load_template
from rpt_core.text.tokenizer import Tokenizer
from rpt_data.cli import main
from rpt_data.export import verl as export_verl_module
from rpt_data.export.verl_rows import (
    ABILITY,
    RAW_CHAT_TEMPLATE,
    SCHEMA,
    label_text,
    prompt_messages,
    verl_row,
)
from rpt_train.rl.rollout import truncate_context
from tests.conftest import QWEN3_TOKENIZER, REPO
from tests.helpers import task_rows, tiny_tokenizer, write_task_shards


def export(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["export", "verl", *args])
    return result.exit_code, result.output


def read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(shards with 1,500 train rows in 2 files and 32 val rows, a directory holding their tokenizer)."""
    root = tmp_path_factory.mktemp("tiny")
    tok = tiny_tokenizer()
    tok.save(root / "tok")
    return write_task_shards(root / "shards", tok, n_train=1500, n_val=32), root / "tok"


# ------------------------------------------------------------------------------------------- rows


def test_a_row_carries_the_label_bytes_boundaries_and_the_reward_settings():
    row = {
        "doc_id": "d:3",
        "position": 7,
        "context": "so x =",
        "label": b" 42.",
        "boundaries": [3, 4],
        "entropy": 1.5,
    }
    out = verl_row(row, "val", 11, load_template("plain"), "first-token", -1.0)
    assert out == {
        "data_source": "rpt",
        "prompt": [{"role": "user", "content": "so x ="}],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": " 42."},
        "extra_info": {
            "split": "val",
            "index": 11,
            "doc_id": "d:3",
            "position": 7,
            "entropy": 1.5,
            "label_b64": base64.b64encode(b" 42.").decode(),
            "boundaries": [3, 4],
            "template": "plain",
            "reward": "first-token",
            "format_penalty": -1.0,
        },
    }


@pytest.mark.parametrize("name", ["qwen3-think", "answer-tags"])
def test_chat_messages_render_to_exactly_the_prompt_rpt_train_uses(name, tmp_path):
    context = "The sum of {a} and 23 is"  # braces in the context stay literal
    for template in (load_template(name), None):
        if template is None:
            (tmp_path / "i.txt").write_text("Continue this:\n{context}\nGo.", encoding="utf-8")
            template = load_template(name, instruction_file=tmp_path / "i.txt")
        messages = prompt_messages(template, context)
        assert render_chat(messages, add_generation_prompt=True, enable_thinking=template.thinks) == (
            template.render(context)
        )


def test_plain_raw_chat_template_renders_the_context_verbatim():
    import jinja2

    context = "  {x} <|im_start|> tail\n"
    messages = prompt_messages(load_template("plain"), context)
    assert jinja2.Template(RAW_CHAT_TEMPLATE).render(messages=messages) == context


def test_label_text_marks_invalid_utf8():
    assert label_text(" é".encode()) == (" é", True)
    assert label_text(b"a\xc3") == ("a\ufffd", False)


# ------------------------------------------------------------------------------------------ export


def test_export_writes_verl_rows_with_a_manifest(tiny, tmp_path):
    shards, tok = tiny
    code, output = export(str(shards), str(tmp_path / "v"), "--template", "plain", "--answer-tokens", "2",
                          "--tokenizer", str(tok), "--format-penalty", "-1")  # fmt: skip
    assert code == 0, output
    assert "train.parquet: 1,500 rows" in output and "val.parquet: 32 rows" in output
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    for split, n in (("train", 1500), ("val", 32)):
        path = tmp_path / "v" / f"{split}.parquet"
        schema = pq.read_schema(path)  # Parquet renames list items; casting checks every type
        assert schema.names == SCHEMA.names and schema.metadata == SCHEMA.metadata
        pq.read_table(path).cast(SCHEMA)
        assert manifest["files"][split] == {"path": path.name, "rows": n, "sha256": sha256_file(path)}
        source = list(iter_rows(shard_paths(shards, split)))
        exported = read(path)
        assert [r["extra_info"]["index"] for r in exported] == list(range(n))
        for src, dst in zip(source, exported, strict=True):
            assert dst["prompt"] == [{"role": "user", "content": src["context"]}]
            assert base64.b64decode(dst["extra_info"]["label_b64"]) == src["label"]
            assert dst["extra_info"]["boundaries"] == src["boundaries"]
            assert (dst["extra_info"]["doc_id"], dst["extra_info"]["split"]) == (src["doc_id"], split)
            assert dst["extra_info"]["format_penalty"] == -1.0
    assert manifest["verl"]["custom_chat_template"] == RAW_CHAT_TEMPLATE
    assert manifest["verl"]["max_response_length"] == 2  # plain: answer_tokens
    assert manifest["template"]["name"] == "plain"
    assert (
        manifest["source"]["tokenizer_base_vocab_fingerprint"] == Tokenizer.load(tok).base_vocab_fingerprint
    )
    assert len(manifest["source"]["manifest_sha256"]) == 64
    assert manifest["counts"]["train"]["rows"] == 1500


def test_rows_stream_in_row_groups_and_the_output_is_reproducible(tiny, tmp_path):
    shards, _ = tiny
    assert export(str(shards), str(tmp_path / "a"), "--quiet")[0] == 0
    assert export(str(shards), str(tmp_path / "b"), "--quiet")[0] == 0
    meta = pq.ParquetFile(tmp_path / "a" / "train.parquet").metadata
    assert meta.num_row_groups == -(-1500 // ROW_GROUP_SIZE)
    assert sha256_file(tmp_path / "a" / "train.parquet") == sha256_file(tmp_path / "b" / "train.parquet")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "manifest.json",
        "train.parquet",
        "val.parquet",
    ]


def test_chat_export_truncates_contexts_like_rpt_train_and_counts_prompt_tokens(
    qwen3_raw_tokenizer, tmp_path
):
    tok = Tokenizer(qwen3_raw_tokenizer)
    long_context = "Let x be 3 and y be 4. " * 40
    rows = [dict(task_rows(1)[0], context=c, label=b" 7", boundaries=[2]) for c in ("Short.", long_context)]
    write_shard(tmp_path / "s" / "train" / shard_name("train", 0, 0), rows_to_table(rows))
    code, output = export(
        str(tmp_path / "s"),
        str(tmp_path / "v"),
        "--tokenizer",
        str(QWEN3_TOKENIZER),
        "--max-prompt-tokens",
        "16",
    )
    assert code == 0, output
    template = load_template("qwen3-think")
    kept = [truncate_context(tok, r["context"], 16) for r in rows]
    assert kept[0] == "Short." and kept[1] != long_context
    exported = read(tmp_path / "v" / "train.parquet")
    assert [r["prompt"] for r in exported] == [prompt_messages(template, c) for c in kept]
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    longest = max(len(tok.encode(template.render(c))) for c in kept)
    assert manifest["verl"]["max_prompt_length"] == longest
    assert manifest["counts"]["train"]["contexts_truncated"] == 1
    assert manifest["verl"]["custom_chat_template"] is None and manifest["verl"]["enable_thinking"] is True
    assert f"data.max_prompt_length >= {longest}" in output
    assert "no val rows" in output and "val" not in manifest["files"]


def test_invalid_utf8_labels_are_exported_and_counted(tiny, tmp_path):
    rows = [dict(task_rows(1)[0], label=b" \xe2\x82", boundaries=[1, 3]), task_rows(2)[1]]
    write_shard(tmp_path / "s" / "train" / shard_name("train", 0, 0), rows_to_table(rows))
    code, output = export(str(tmp_path / "s"), str(tmp_path / "v"))
    assert code == 0, output
    exported = read(tmp_path / "v" / "train.parquet")
    assert exported[0]["reward_model"]["ground_truth"] == " \ufffd"
    assert base64.b64decode(exported[0]["extra_info"]["label_b64"]) == b" \xe2\x82"
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert manifest["counts"]["train"]["labels_not_utf8"] == 1
    assert "1 labels are not valid UTF-8" in output
    assert "no tokenizer" in output and manifest["verl"]["max_prompt_length"] is None


def test_a_stale_val_file_of_an_earlier_export_is_removed(tiny, tmp_path):
    shards, _ = tiny
    assert export(str(shards), str(tmp_path / "v"), "--quiet")[0] == 0
    flat = tmp_path / "flat"  # a directory of shards without train/ and val/: all of it is train
    write_shard(flat / "a.parquet", rows_to_table(task_rows(5)))
    assert export(str(flat), str(tmp_path / "v"), "--quiet")[0] == 0
    assert not (tmp_path / "v" / "val.parquet").exists()
    assert len(read(tmp_path / "v" / "train.parquet")) == 5


def test_span_class_goes_into_extra_info_and_is_null_for_shards_without_the_column(tmp_path):
    rows = [dict(r, span_class=c) for r, c in zip(task_rows(3), ["given", None, "computed_op"], strict=True)]
    table = rows_to_table(rows)
    write_shard(tmp_path / "spans" / "a.parquet", table)
    older = tmp_path / "older"  # built before shards had the column
    older.mkdir()
    pq.write_table(table.drop_columns(["span_class"]), older / "a.parquet")
    for shards, expected in (("spans", ["given", None, "computed_op"]), ("older", [None] * 3)):
        assert export(str(tmp_path / shards), str(tmp_path / f"v-{shards}"), "--quiet")[0] == 0
        exported = read(tmp_path / f"v-{shards}" / "train.parquet")
        assert [r["extra_info"]["span_class"] for r in exported] == expected
    assert verl_row(rows[0], "train", 0, load_template("plain"))["extra_info"]["span_class"] == "given"


def test_recipe_train_settings_are_inherited_and_options_override(tiny, tmp_path):
    shards, _ = tiny
    recipe = tmp_path / "r.toml"
    recipe.write_text('[train]\ntemplate = "answer-tags"\nformat_penalty = -0.5\nmodel = "ignored"\n')
    assert export(str(shards), str(tmp_path / "v"), "--config", str(recipe), "--quiet")[0] == 0
    row = read(tmp_path / "v" / "val.parquet")[0]
    assert (row["extra_info"]["template"], row["extra_info"]["format_penalty"]) == ("answer-tags", -0.5)
    assert (
        export(str(shards), str(tmp_path / "w"), "--config", str(recipe), "--template", "plain", "--quiet")[0]
        == 0
    )
    assert read(tmp_path / "w" / "val.parquet")[0]["extra_info"]["template"] == "plain"


def test_user_errors_are_one_line(tiny, tmp_path):
    shards, _ = tiny
    code, output = export(str(shards), str(tmp_path / "v"), "--tokenizer", str(QWEN3_TOKENIZER))
    assert code == 1 and output.startswith("error: the shards were built with another tokenizer")
    code, output = export(str(tmp_path / "missing"), str(tmp_path / "v"))
    assert code == 1 and output.startswith("error: no train/ shards")
    code, output = export(str(shards), str(shards))
    assert code == 1 and output.startswith("error:")
    assert output.count("\n") == 1


def test_the_clis_and_the_export_import_neither_torch_nor_polars():
    """The CLI groups import a command's module only when it runs: `export verl` starts in under a second."""
    code = (
        "import sys, rpt_data.cli, rpt_train.cli, rpt_data.export.verl, rpt_train.verl_reward\n"
        "print(sorted({'torch', 'polars', 'datasets'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "verl" in CliRunner().invoke(main, ["export", "--help"]).output
    assert {"build", "inspect", "export", "generate", "tokenizer"} <= set(main.list_commands(None))


def test_an_unreadable_shard_is_one_error_line_before_anything_is_written(tiny, tmp_path):
    shards, _ = tiny
    assert export(str(shards), str(tmp_path / "v"), "--quiet")[0] == 0
    before = (tmp_path / "v" / "manifest.json").read_text()
    broken = tmp_path / "broken"
    write_shard(broken / "train" / shard_name("train", 0, 0), rows_to_table(task_rows(3)))
    (broken / "val").mkdir()
    (broken / "val" / "val-00000-00000.parquet").write_bytes(b"not parquet")
    code, output = export(str(broken), str(tmp_path / "v"))
    assert code == 1 and output.startswith("error:") and "not a readable Parquet shard" in output
    assert (tmp_path / "v" / "manifest.json").read_text() == before  # the earlier export is untouched


def test_an_export_that_fails_midway_leaves_no_manifest(tiny, tmp_path, monkeypatch):
    shards, _ = tiny
    assert export(str(shards), str(tmp_path / "v"), "--quiet")[0] == 0
    real = export_verl_module.verl_row

    def fail_on_val(row, split, *args, **kwargs):
        if split == "val":
            raise RptError("disk full")
        return real(row, split, *args, **kwargs)

    monkeypatch.setattr(export_verl_module, "verl_row", fail_on_val)
    assert export(str(shards), str(tmp_path / "v"), "--quiet") == (1, "error: disk full\n")
    assert not (tmp_path / "v" / "manifest.json").exists()  # train.parquet is new: the recipe must refuse
