"""Project hygiene: CI runs the README's commands; spacetime never imports diffusers."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_ci_runs_exactly_the_readme_commands():
    quick_start = re.search(
        r"## Quick start\s+```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S
    )
    readme = [line for line in quick_start.group(1).splitlines() if line.strip()]
    ci = [
        line
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == [readme[0], readme[-1]]


def test_spacetime_never_imports_diffusers():
    offenders = [
        str(p)
        for p in (ROOT / "spacetime").rglob("*.py")
        if re.search(r"^\s*(from|import) diffusers", p.read_text(), re.M)
    ]
    assert offenders == []


def test_import_is_lean():
    code = "import sys, spacetime.image; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
