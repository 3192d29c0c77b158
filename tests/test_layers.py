"""The package layers: rpt_core imports neither rpt_data nor rpt_train, and those two never import each
other (statically, including lazily imported modules and the CLI's lazy command table); no module name
shadows the standard library; the documented import paths re-export the moved code."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rpt_core", "rpt_data", "rpt_train")
ALLOWED = {"rpt_core": set(), "rpt_data": {"rpt_core"}, "rpt_train": {"rpt_core"}}


def imported_packages(path: Path) -> dict[str, int]:
    """The rpt packages a module imports (any import statement, at any depth, or a dotted string such as a
    lazy command table's ``"pkg.mod:attr"``), each with the first line that does."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
            head = node.value.split(":")[0]
            names = [head] if all(part.isidentifier() for part in head.split(".")) else []
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.setdefault(top, node.lineno)
    return found


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_only(package):
    wrong = [
        f"{p.relative_to(REPO)}:{line} imports {other}"
        for p in modules(package)
        for other, line in imported_packages(p).items()
        if other != package and other not in ALLOWED[package]
    ]
    assert wrong == []


def test_the_checker_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from rpt_train.rl import trainer\n\nCOMMANDS = {'x': 'rpt_train.cli.run:run'}\n"
    )
    assert imported_packages(bad) == {"rpt_train": 2}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_shadows_the_standard_library(package):
    shadowing = [str(p.relative_to(REPO)) for p in modules(package) if p.stem in sys.stdlib_module_names]
    assert shadowing == []


def test_documented_import_paths_re_export_the_moved_code():
    import rpt_core.model
    import rpt_core.model.generation
    import rpt_core.verl_reward
    from rpt_train.generate import SamplingParams, generate
    from rpt_train.model import Qwen3Config, Qwen3ForCausalLM
    from rpt_train.verl_reward import compute_score

    assert Qwen3Config is rpt_core.model.Qwen3Config and Qwen3ForCausalLM is rpt_core.model.Qwen3ForCausalLM
    assert SamplingParams is rpt_core.model.generation.SamplingParams
    assert generate is rpt_core.model.generation.generate
    assert compute_score is rpt_core.verl_reward.compute_score
