"""``rpt-data build``: the command-line face of ``rpt_data.build.build``.

Options map one to one onto ``BuildConfig`` fields; precedence is BuildConfig defaults < ``[data]`` of
``--config FILE.toml`` < options typed on the command line. ``RptError`` propagates to the ``rpt-data``
group, which prints it as one line and exits 1. Run several ranks with
``torchrun --nproc-per-node N -m rpt_data.cli build ...``.
"""

from __future__ import annotations

import click

from rpt_data.build import DEFAULT_PROXY, BuildConfig
from rpt_data.build import build as run_build
from rpt_train.cli_common import config_option, unescape
from rpt_train.config import resolve_config

_D = BuildConfig()


@click.command("build")
@config_option("data")
@click.option(
    "--dataset",
    multiple=True,
    help="Hub dataset id, or .jsonl/.json/.parquet file, dir or glob "
    f"(repeatable). Default: {_D.dataset[0]}.",
)
@click.option("--split", help=f"Hub dataset split. Default: {_D.split}.")
@click.option(
    "--text-template",
    callback=unescape,
    help="Record fields -> document text, str.format style. Default: '{problem}\\n\\n{solution}'.",
)
@click.option(
    "--tokenizer", help="tokenizer.json, a directory holding one, or a hub id. Default: the proxy's."
)
@click.option("--proxy-model", help=f"HF-format directory or hub id of the proxy. Default: {DEFAULT_PROXY}.")
@click.option("--out", type=click.Path(file_okay=False), help=f"Build directory. Default: {_D.out}.")
@click.option(
    "--entropy-threshold",
    type=float,
    help="Keep training positions with entropy >= this (nats). Default: off.",
)
@click.option(
    "--min-context-tokens",
    type=click.IntRange(min=0),
    help="Keep positions with at least this many context tokens (train and val). Default: off.",
)
@click.option(
    "--max-samples-per-doc",
    type=click.IntRange(min=1),
    help="Keep at most this many training positions per document, the highest-entropy ones. Default: no cap.",
)
@click.option(
    "--labels-length", type=click.IntRange(min=1), help=f"Label tokens per row. Default: {_D.labels_length}."
)
@click.option(
    "--top-k", type=click.IntRange(min=1), help=f"Entropy over the top-k logits. Default: {_D.top_k}."
)
@click.option(
    "--val-docs",
    type=click.IntRange(min=0),
    help=f"Whole documents held out for validation. Default: {_D.val_docs}.",
)
@click.option("--seed", type=int, help=f"Seed of the held-out document choice. Default: {_D.seed}.")
@click.option("--rows-per-shard", type=click.IntRange(min=1), help=f"Default: {_D.rows_per_shard}.")
@click.option(
    "--block-docs",
    type=click.IntRange(min=1),
    help="Documents tokenized and scored together "
    f"(changes the proxy's batches, hence part of the config). Default: {_D.block_docs}.",
)
@click.option(
    "--batch-tokens",
    type=click.IntRange(min=1),
    help=f"Padded tokens per proxy batch. Default: {_D.batch_tokens}.",
)
@click.option(
    "--max-window",
    type=click.IntRange(min=2),
    help="Longest proxy window; longer documents are "
    "scored in overlapping windows. Default: the proxy's max_position_embeddings.",
)
@click.option(
    "--window-overlap",
    type=click.IntRange(min=0),
    help=f"Context tokens a window shares with the previous one. Default: {_D.window_overlap}.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16"]),
    help="Proxy dtype. Default: bfloat16 on CUDA, float32 on CPU.",
)
@click.option("--device", help="cpu, cuda or cuda:N. Default: CUDA when available.")
@click.option(
    "--strict", is_flag=True, default=None, help="Fail on the first bad record instead of skipping."
)
@click.option("--overwrite", is_flag=True, default=None, help="Clear OUT's previous build first.")
@click.option("--quiet", is_flag=True, default=None, help="No progress display and no summary.")
@click.option("--max-documents", type=click.IntRange(min=1), help="Use only the first N documents.")
@click.pass_context
def build(ctx: click.Context, config: str | None, **_options) -> None:
    """Score a corpus with a proxy model and write RPT Parquet shards (train + held-out val) to OUT."""
    run_build(resolve_config(BuildConfig, ctx, "data", config))
