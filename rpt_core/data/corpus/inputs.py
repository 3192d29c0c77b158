"""Where a corpus comes from: input specs (files, globs, directories, hub ids) resolved to sources.

An existing path or a glob that matches is local (a directory means every .jsonl/.json/.parquet file under
it, recursively, sorted); a string with a known file suffix that matches nothing, or that looks like a
path, is an ``RptError``; anything else is a Hugging Face dataset id. Each local source carries the key
its documents' ids start with (see ``rpt_core.data.corpus.readers``).
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rpt_core.runtime.errors import RptError
from rpt_core.runtime.hub import is_hub_id

DEFAULT_DATASET = "KbsdJames/Omni-MATH"
DEFAULT_SPLIT = "test"
SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str  # doc id prefix

    @property
    def label(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class HubDataset:
    dataset_id: str
    split: str

    @property
    def key(self) -> str:
        return f"{self.dataset_id}:{self.split}"

    @property
    def label(self) -> str:
        return f"{self.dataset_id}[{self.split}]"


Source = LocalFile | HubDataset


def _expand_one(spec: str) -> list[tuple[Path, Path]] | None:
    """(file, path used for its key) pairs of one local input; None means "not local: a Hub id"."""
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise RptError(f"{spec}: unsupported file type (expected {', '.join(SUFFIXES)})")
        return [(path, Path(path.stem))]
    if path.is_dir():
        if not (files := _corpus_files(path)):
            raise RptError(f"{spec}: directory holds no {'/'.join(SUFFIXES)} files")
        return [(p, p.relative_to(path).with_suffix("")) for p in files]
    if glob.has_magic(spec):
        base, files = _glob_base(path), []
        for m in sorted(Path(m) for m in glob.glob(str(path), recursive=True)):
            found = _corpus_files(m) if m.is_dir() else [m] if m.suffix.lower() in SUFFIXES else []
            files += [(p, p.relative_to(base).with_suffix("")) for p in found]
        if not files:
            raise RptError(f"{spec}: no {'/'.join(SUFFIXES)} files match this pattern")
        return files
    if not is_hub_id(spec):
        raise RptError(f"{spec}: no such file or directory")
    return None


def _corpus_files(root: Path) -> list[Path]:
    """Corpus files under a directory, sorted; hidden ones (e.g. atomic-write temp files) left out."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _glob_base(pattern: Path) -> Path:
    parts = []
    for part in pattern.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _unique_keys(entries: list[tuple[Path, Path]]) -> list[str]:
    """Keys from the relative paths; colliding ones use as many trailing components as make them unique."""
    keys = [rel.as_posix() for _, rel in entries]
    counts = Counter(keys)
    out = list(keys)
    for key, n in counts.items():
        if n == 1:
            continue
        group = [i for i, k in enumerate(keys) if k == key]
        full = [entries[i][0].resolve() for i in group]
        for variant in ([p.with_suffix("").parts for p in full], [p.parts for p in full]):
            depth = next((d for d in range(1, 256) if len({v[-d:] for v in variant}) == len(group)), None)
            if depth is not None:
                for i, v in zip(group, variant, strict=True):
                    out[i] = "/".join(v[-depth:]).lstrip("/")
                break
    if len(set(out)) != len(out):  # a disambiguated key met an unrelated one: fall back to full paths
        out = [p.resolve().as_posix() for p, _ in entries]
    return out


def resolve_inputs(inputs: str | Sequence[str], split: str = DEFAULT_SPLIT) -> list[Source]:
    """Turn input strings into sources (local files in order, duplicates dropped, or Hub datasets)."""
    specs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not specs:
        raise RptError("no input given (a .jsonl/.json/.parquet path, directory, glob or Hub dataset id)")
    sources: list[Source | None] = []
    local: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for spec in map(str, specs):
        files = _expand_one(spec)
        if files is None:
            sources.append(HubDataset(spec, split))
            continue
        for path, rel in files:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                local.append((path, rel))
                sources.append(None)  # placeholder, filled in order below
    keys = iter(_unique_keys(local))
    files_iter = iter(local)
    return [s if s is not None else LocalFile(next(files_iter)[0], next(keys)) for s in sources]
