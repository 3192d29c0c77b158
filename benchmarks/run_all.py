"""``make bench``: run every benchmark in this folder, one after another, and print their reports.

Each script measures its own reference in the same run and prints ratios against it (targets are stated
in each script's docstring). ``--quick`` passes ``--quick`` on for a smoke run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_generate.py", "bench_scoring.py", "bench_build.py", "bench_grpo.py"]
# Sizes that finish in about half an hour on 2 CPU cores; --full uses each script's own (GPU-sized) defaults.
CPU_ARGS = {"bench_scoring.py": ["--docs", "300"], "bench_build.py": ["--docs", "200", "--scale", "8"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the scripts run")
    parser.add_argument("--full", action="store_true", help="each script's full default sizes")
    parser.add_argument("--only", nargs="*", help="script names to run (default: all)")
    args = parser.parse_args()
    failed = []
    for name in args.only or SCRIPTS:
        print(f"\n===== {name} =====", flush=True)
        t0 = time.perf_counter()
        sizes = ["--quick"] if args.quick else [] if args.full else CPU_ARGS.get(name, [])
        cmd = [sys.executable, str(HERE / name), *sizes]
        if subprocess.run(cmd, cwd=HERE.parent).returncode != 0:
            failed.append(name)
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
