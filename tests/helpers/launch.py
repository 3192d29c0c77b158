"""Launching two ranks with torchrun from a test: the command prefix, and the variables torchrun sets in a
worker (cleared before launching, so a test that itself runs under torchrun starts its workers clean)."""

from __future__ import annotations

import sys

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TWO_RANKS = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
