"""``rpt-train pretrain``: next-token pretraining of a small Qwen3 from scratch (``rpt_train.pretrain``)."""

from __future__ import annotations

import click

from rpt_train.cli_common import config_option
from rpt_train.config import build_config, load_toml_section
from rpt_train.pretrain import PretrainConfig, pretrain


@click.command("pretrain")
@click.argument("corpus", nargs=-1)
@config_option("pretrain")
@click.option("--tokenizer", help="tokenizer.json, or a directory holding one.")
@click.option("--out", help="Output directory (HF format: config.json, model.safetensors, tokenizer.json).")
@click.option("--preset", help="Model shape preset (tiny, qwen3-0.6b).")
@click.option(
    "--text-template", help="Document text from record fields, default '{problem}\\n\\n{solution}'."
)
@click.option("--seq-len", type=int, help="Training window in tokens.")
@click.option("--batch-size", type=int)
@click.option("--max-steps", type=int)
@click.option("--lr", type=float, help="Peak learning rate (warmup, then cosine decay).")
@click.option("--warmup-steps", type=int)
@click.option("--seed", type=int)
@click.option("--device", help="cpu, cuda, cuda:1 (default: CUDA when present).")
@click.option("--bf16-autocast/--no-bf16-autocast", default=None, help="bfloat16 matmuls (float32 weights).")
@click.option("--quiet", is_flag=True, default=None, help="No progress output.")
def pretrain_cmd(corpus: tuple[str, ...], config: str | None, **opts: object) -> None:
    """Pretrain a model from scratch on CORPUS (OmniMATH-format files) and save it in HF format."""
    given = {k: v for k, v in opts.items() if v is not None}
    if corpus:
        given["corpus"] = list(corpus)
    cfg = build_config(PretrainConfig, load_toml_section(config, "pretrain") if config else {}, given)
    summary = pretrain(cfg)
    if not cfg.quiet:
        last = summary["history"][-1] if summary["history"] else {}
        click.echo(
            f"pretrained {summary['parameters']:,} parameters on {summary['tokens_in_corpus']:,} tokens in "
            f"{summary['seconds']} s; final eval loss {last.get('eval_loss', float('nan')):.3f} -> {cfg.out}"
        )
