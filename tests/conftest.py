"""Shared test fixtures: where ../shared lives, and the GPU marker that skips without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
QWEN3_TOKENIZER = SHARED / "tokenizers" / "qwen3" / "tokenizer.json"
CORPORA = SHARED / "corpora"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} not found: tests need ../shared beside the repository")
    return SHARED
