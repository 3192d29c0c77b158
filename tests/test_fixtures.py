"""The shipped third-party inputs are the originals, byte for byte, and nothing reads outside the clone.

The checksums are the originals' (Qwen3 tokenizer files, CHAMP, GSM8K train), written here and in
``tests/fixtures/README.md`` / ``data/README.md``: a changed byte fails this test before it silently moves
a tokenizer fact or a corpus count elsewhere in the suite.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.conftest import CHAMP, GSM8K, QWEN3_DIR, REPO

ORIGINALS = {
    QWEN3_DIR / "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    QWEN3_DIR / "tokenizer_config.json": "16ac5853d77c5ca561fc3f7e7cb9baca69b3d3c009d34edb76770699532b712e",
    CHAMP: "d07ed2d9779ca19de3e82e53a7e5b7d18320c2404267d141b04fe23d8a08c214",
    GSM8K: "508e9e2698a9d76af4d0ab7eb988e5be8874f87155ada6da63156683d6a46473",
}
LICENCES = {
    QWEN3_DIR / "LICENSE": "Apache License",
    CHAMP.parent / "CHAMP-LICENSE": "Permission is hereby granted",
    GSM8K.parent / "GSM8K-LICENSE": "Permission is hereby granted",
}


@pytest.mark.parametrize("path", list(ORIGINALS), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_file_is_the_original(path: Path):
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ORIGINALS[path]


@pytest.mark.parametrize("path", list(LICENCES), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_file_has_its_licence(path: Path):
    assert LICENCES[path] in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("readme", ["tests/fixtures/README.md", "data/README.md"])
def test_readmes_state_the_checksums(readme: str):
    text = (REPO / readme).read_text(encoding="utf-8")
    listed = set(re.findall(r"`([0-9a-f]{64})`", text))
    shipped_here = {h for p, h in ORIGINALS.items() if str(p).startswith(str((REPO / readme).parent))}
    assert shipped_here and shipped_here <= listed


# A path into a folder beside the clone: '../shared', 'parent / "shared"', 'parents[N].parent / "shared"'.
OUTSIDE = re.compile(r"\.\./shared|parents?\b[^\n]{0,16}/\s*\"shared\"")


def _sources() -> list[Path]:
    roots = [
        REPO / d for d in ("tests", "benchmarks", "pipelines", "rpt_core", "rpt_data", "rpt_train", ".ci")
    ]
    files = [REPO / "Makefile"] + [f for r in roots for f in r.rglob("*") if f.is_file()]
    return [f for f in files if f.suffix in {".py", ".sh", ".toml", ""} and f != Path(__file__).resolve()]


def test_nothing_reads_beside_the_clone():
    """Tests, benchmarks, recipes, the Makefile and the packages name no path outside the repository."""
    offenders = [f for f in _sources() if OUTSIDE.search(f.read_text(encoding="utf-8", errors="replace"))]
    assert offenders == []
