"""``rpt-data generate``: write a SynthMath corpus (OmniMATH-format JSON lines) reproducibly.

``rpt-data generate --n 3000 --seed 0 --out data/synthmath.jsonl`` recreates the committed sample byte for
byte. The file is written atomically (temp file, then rename).
"""

from __future__ import annotations

from pathlib import Path

import click

from rpt_data.synth import dump_record, generate_records
from rpt_train.errors import RptError
from rpt_train.io import atomic_path, sha256_file
from rpt_train.progress import Progress


def write_corpus(out: str | Path, n: int, seed: int = 0, quiet: bool = True) -> str:
    """Generate ``n`` records from ``seed`` into ``out`` (JSON lines); returns the file's sha256."""
    if n < 1:
        raise RptError(f"--n must be at least 1, got {n}")
    out = Path(out)
    if out.is_dir():
        raise RptError(f"{out}: is a directory; give a .jsonl file path")
    progress = Progress(n, unit="records", desc="generate", quiet=quiet)
    try:
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for record in generate_records(n, seed):
                f.write(dump_record(record))
                progress.update(1)
    except OSError as e:
        raise RptError(f"{out}: cannot write ({e.strerror or e})") from None
    finally:
        progress.close()
    return sha256_file(out)


@click.command("generate")
@click.option("--n", "n", type=int, default=3000, show_default=True, help="Number of records.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="data/synthmath.jsonl",
    show_default=True,
    help="Output .jsonl path (written atomically).",
)
@click.option("--quiet", is_flag=True, help="No progress display.")
def generate(n: int, seed: int, out: str, quiet: bool) -> None:
    """Write a synthetic OmniMATH-format math corpus (worked problems with \\boxed{} answers)."""
    try:
        digest = write_corpus(out, n, seed, quiet=quiet)
    except RptError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {n} records to {out} (sha256 {digest})")
