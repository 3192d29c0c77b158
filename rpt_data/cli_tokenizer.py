"""``rpt-data tokenizer train``: a small Qwen-style BPE from an OmniMATH-format corpus.

Thin: options (over the ``[tokenizer]`` table of ``--config``) -> ``TokenizerTrainConfig`` ->
``rpt_data.tokenizer_train.train_from_corpus``.
"""

from __future__ import annotations

import click

from rpt_data.tokenizer_train import MIN_VOCAB_SIZE, TokenizerTrainConfig, train_from_corpus
from rpt_train.cli_common import config_option, unescape
from rpt_train.config import build_config, load_toml_section


@click.group("tokenizer")
def tokenizer_group() -> None:
    """Tokenizer tools."""


@tokenizer_group.command("train")
@click.argument("corpus", nargs=-1, required=True)
@config_option("tokenizer")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Writes OUT/tokenizer.json.")
@click.option(
    "--vocab-size",
    type=click.IntRange(min=MIN_VOCAB_SIZE),
    help="Total tokens: 256 bytes + merges + 5 added chat tokens. Default: 2048.",
)
@click.option("--min-frequency", type=click.IntRange(min=1), help="Default: 2.")
@click.option("--text-template", callback=unescape, help=r"Default: '{problem}\n\n{solution}'.")
@click.option("--split", help="Split, for a hub dataset id.")
@click.option("--quiet", is_flag=True, default=None, help="No progress display.")
def train_command(corpus: tuple[str, ...], config: str | None, **opts: object) -> None:
    """Train a Qwen-style byte-level BPE on CORPUS (files, globs, dirs or a hub id)."""
    given = {k: v for k, v in opts.items() if v is not None}
    given["corpus"] = list(corpus)
    cfg = build_config(TokenizerTrainConfig, load_toml_section(config, "tokenizer") if config else {}, given)
    click.echo(train_from_corpus(cfg))
