"""``rpt-train convert gguf``: options generated from ``ConvertGgufConfig`` (``[convert]`` of a recipe);
the work is ``rpt_train.convert.convert_gguf``."""

from __future__ import annotations

import click

from rpt_core.runtime.cli import config_command
from rpt_train.convert import ConvertGgufConfig, convert_gguf


@click.group("convert", context_settings={"help_option_names": ["-h", "--help"]})
def convert_group() -> None:
    """Convert checkpoints from other formats into Hugging Face model directories."""


@config_command(ConvertGgufConfig, "convert", name="gguf", group=convert_group)
def gguf_command(cfg: ConvertGgufConfig) -> None:
    """Convert GGUF (a llama, qwen2 or qwen3 llama.cpp file) into OUT: config.json, model.safetensors,
    tokenizer.json and tokenizer_config.json (with the chat template)."""
    summary = convert_gguf(cfg)
    if not cfg.quiet:
        types = ", ".join(f"{n} {k}" for k, n in sorted(summary["tensor_types"].items()))
        click.echo(
            f"converted {summary['architecture']} GGUF ({summary['parameters']:,} parameters; tensors: "
            f"{types}) to {cfg.dtype} with a {summary['vocab_size']:,}-token tokenizer in "
            f"{summary['seconds']} s -> {summary['out']}"
        )
