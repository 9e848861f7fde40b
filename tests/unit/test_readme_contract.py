"""The README opens with the two commands of DESIGN §12, and .ci/run runs the second verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks[:1] for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_run_and_test_commands():
    run, test = _readme_commands()[:2]
    assert "ganntec run" in run and "pip install" in run
    assert "pytest" in test and ".[test]" in test


def test_ci_runs_the_readme_test_command():
    test = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()


def test_readme_python_examples_run(tmp_path, monkeypatch, instance):
    """Every ```python block of the README runs as written (ring examples use their own
    instance name, so segments are checked by the `instance` fixture's sweep of it)."""
    text = (ROOT / "README.md").read_text().replace('"demo"', repr(instance))
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
