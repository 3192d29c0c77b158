"""``rpt-data build``: options generated from ``BuildConfig`` (``[data]`` of a recipe); the work is
``rpt_data.build.pipeline.build``. Run several ranks with
``torchrun --nproc-per-node N -m rpt_data.cli build ...``.
"""

from __future__ import annotations

from rpt_core.runtime.cli import config_command
from rpt_data.build.pipeline import BuildConfig
from rpt_data.build.pipeline import build as run_build


@config_command(BuildConfig, "data", name="build")
def build(cfg: BuildConfig) -> None:
    """Score a corpus with a proxy model and write RPT Parquet shards (train + held-out val) to OUT."""
    run_build(cfg)
