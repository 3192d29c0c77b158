"""``python -m rpt_train.cli`` (what torchrun launches) is the ``rpt-train`` command."""

from rpt_train.cli import main

main()
