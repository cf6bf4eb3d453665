"""The README's promises hold: its Python example runs, and CI runs its test command."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs():
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.group(1), "README.md", "exec"), {})
    assert out.getvalue() == "File exists\n"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci
    lines = README.splitlines()
    i = lines.index("<!-- test-command -->")
    assert lines[i + 1] == "```sh"
    assert "pytest" in lines[i + 2] and "pip install" in lines[i + 2]


def test_quickstart_runs_the_demo():
    first = re.search(r"```sh\n(.*?)\n```", README, re.S)
    assert first is not None and first.group(1).endswith("vfiosim demo")
