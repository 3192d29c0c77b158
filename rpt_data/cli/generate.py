"""``rpt-data generate``: options generated from ``GenerateConfig``; the work is ``rpt_data.synth.writer``."""

from __future__ import annotations

import click

from rpt_core.runtime.cli import config_command
from rpt_data.synth.writer import GenerateConfig, write_corpus


@config_command(GenerateConfig, "generate", name="generate")
def generate(cfg: GenerateConfig) -> None:
    """Write a synthetic OmniMATH-format math corpus (worked problems with \\boxed{} answers)."""
    digest, written = write_corpus(
        cfg.out,
        cfg.n,
        cfg.seed,
        cfg.quiet,
        cfg.think_fraction,
        cfg.think_results,
        cfg.think_drills,
        cfg.drills_only,
    )
    drills = f" and {written - cfg.n} drills" if written > cfg.n else ""
    kind = " drills" if cfg.drills_only else " records"
    click.echo(f"wrote {cfg.n}{kind}{drills} to {cfg.out} (sha256 {digest})")
