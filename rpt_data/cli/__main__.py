"""``python -m rpt_data.cli`` (what torchrun launches) is the ``rpt-data`` command."""

from rpt_data.cli import main

main()
