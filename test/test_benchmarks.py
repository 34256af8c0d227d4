"""The reusable benchmark tools still run: each imports, prints its --help, and its committed results read
back as JSON. (What they measure is timing: that belongs in the tools, never in a test.)"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TOOLS = sorted(BENCHMARKS.glob("*.py"))


def test_the_tools_are_the_ones_the_readme_lists():
    readme = (BENCHMARKS / "README.md").read_text()
    assert TOOLS and all(f"`{tool.name}`" in readme for tool in TOOLS)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: p.stem)
def test_each_tool_imports_and_prints_its_help(tool, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(f"benchmark_{tool.stem}", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a broken import (a name that moved) fails here
    monkeypatch.setattr(sys, "argv", [tool.name, "--help"])
    with pytest.raises(SystemExit) as done:
        module.main()
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("result", sorted(BENCHMARKS.glob("*.json")), ids=lambda p: p.stem)
def test_each_committed_result_sits_beside_its_tool_and_reads_back(result):
    assert any(result.stem.startswith(tool.stem) for tool in TOOLS), f"{result.name}: no tool of that name"
    assert isinstance(json.loads(result.read_text()), dict)
