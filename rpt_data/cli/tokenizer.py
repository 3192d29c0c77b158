"""``rpt-data tokenizer train``: options generated from ``TokenizerTrainConfig`` (``[tokenizer]`` of a
recipe); the work is ``rpt_data.tokenizer_train.train_from_corpus``."""

from __future__ import annotations

import click

from rpt_core.runtime.cli import config_command
from rpt_data.tokenizer_train import TokenizerTrainConfig, train_from_corpus


@click.group("tokenizer", context_settings={"help_option_names": ["-h", "--help"]})
def tokenizer_group() -> None:
    """Tokenizer tools."""


@config_command(TokenizerTrainConfig, "tokenizer", name="train", group=tokenizer_group)
def train_command(cfg: TokenizerTrainConfig) -> None:
    """Train a Qwen-style byte-level BPE on CORPUS (files, globs, dirs or a hub id)."""
    click.echo(train_from_corpus(cfg))
