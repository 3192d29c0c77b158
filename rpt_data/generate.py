"""``rpt-data generate``: write a SynthMath corpus (OmniMATH-format JSON lines) reproducibly.

``rpt-data generate --n 3000 --seed 0 --out data/synthmath.jsonl`` recreates the committed sample byte for
byte (the families are in ``rpt_data.synth``). The file is written atomically (temp file, then rename).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rpt_data.synth import dump_record, generate_records
from rpt_train.config import check, option
from rpt_train.errors import RptError
from rpt_train.io import atomic_path, sha256_file
from rpt_train.progress import Progress


@dataclass
class GenerateConfig:
    n: int = option(3000, "Number of records.", ge=1)
    seed: int = option(0, "Random seed (same seed, same bytes).")
    out: str = option("data/synthmath.jsonl", "Output .jsonl path (written atomically).")
    quiet: bool = option(False, "No progress display.")

    def __post_init__(self) -> None:
        check(self)


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
