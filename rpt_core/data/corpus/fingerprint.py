"""What exactly a corpus was: fingerprints of its inputs, so a rerun can tell that its data changed.

A local file is recorded by size, modification time and sha256 (one streaming pass, with a progress line
for large corpora); a Hub dataset by id, split and the revision (commit) it resolves to. ``input_changes``
compares two records: content (sha256, size, revision) decides, a modification time alone does not (a
copied or touched file is the same data). Inputs are matched by their key, the prefix of their documents'
ids (``rpt_core.data.corpus.inputs``), so a file added to or gone from a directory input is a change too.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpt_core.data.corpus.inputs import HubDataset, LocalFile, resolve_inputs
from rpt_core.runtime.progress import Progress

HASH_CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 64 << 20  # below this, hashing takes well under a second: no progress line


def hub_revision(dataset_id: str) -> str | None:
    """The commit a Hub dataset id resolves to now: asked of the Hub, else read from the local cache (the
    commit the cached copy came from), else None (unknown: then no change can be detected)."""
    offline = any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if not offline:
        try:
            from huggingface_hub import HfApi

            return HfApi().dataset_info(dataset_id, timeout=10).sha
        except Exception:  # noqa: BLE001 - offline, unknown, private: fall back to the cache
            pass
    try:
        from huggingface_hub import constants

        ref = Path(constants.HF_HUB_CACHE) / f"datasets--{dataset_id.replace('/', '--')}" / "refs" / "main"
        return ref.read_text().strip() or None
    except (ImportError, OSError):
        return None


def input_fingerprints(inputs: str | Sequence[str], split: str, quiet: bool = True) -> list[dict[str, Any]]:
    """One record per input source, in corpus order (see the module docstring)."""
    sources = resolve_inputs(inputs, split)
    files = [s for s in sources if isinstance(s, LocalFile)]
    total = sum(s.path.stat().st_size for s in files)
    progress = Progress(
        -(-total // HASH_CHUNK), unit="MiB", desc="hash inputs", quiet=quiet or total < PROGRESS_MIN_BYTES
    )
    out: list[dict[str, Any]] = []
    with progress:
        for source in sources:
            if isinstance(source, HubDataset):
                out.append(
                    {
                        "key": source.key,
                        "dataset": source.dataset_id,
                        "split": source.split,
                        "revision": hub_revision(source.dataset_id),
                    }
                )
                continue
            stat = source.path.stat()
            h = hashlib.sha256()
            with open(source.path, "rb") as f:
                while block := f.read(HASH_CHUNK):
                    h.update(block)
                    progress.update(1)
            out.append(
                {
                    "key": source.key,
                    "path": str(source.path),
                    "size": stat.st_size,
                    "mtime": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stat.st_mtime)),
                    "sha256": h.hexdigest(),
                }
            )
    return out


def _name(record: dict[str, Any]) -> str:
    return record.get("path") or f"{record.get('dataset')}[{record.get('split')}]"


def input_changes(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[str]:
    """What differs between two fingerprint lists, one phrase per input naming it (empty: the same data)."""
    before = {r["key"]: r for r in old}
    now = {r["key"]: r for r in new}
    changes = []
    for key, r in now.items():
        was = before.get(key)
        if was is None:
            changes.append(f"{_name(r)} is a new input")
        elif "sha256" in r and (was.get("sha256"), was.get("size")) != (r["sha256"], r["size"]):
            changes.append(
                f"{_name(r)} changed (size {was.get('size')} -> {r['size']} bytes, sha256 "
                f"{str(was.get('sha256'))[:12]}... -> {r['sha256'][:12]}..., modified {r['mtime']})"
            )
        elif (
            "revision" in r
            and None not in (r["revision"], was.get("revision"))
            and (r["revision"] != was["revision"])
        ):
            changes.append(f"{_name(r)} changed (revision {was['revision']} -> {r['revision']})")
    changes += [f"{_name(r)} is no longer an input" for key, r in before.items() if key not in now]
    return changes
