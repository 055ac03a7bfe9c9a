"""Every Python and bash example in README.md runs and its assertions hold.

Python blocks run in this process; bash blocks (the CLI examples) run in ``bash -eu``
in a temporary folder with private XDG homes, the virtualenv's ``tally`` first on
PATH, and any deployment they leave in ``./state`` stopped afterwards.  ``sh`` blocks
(``make …``, Kubernetes commands) are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
SHELL_BLOCKS = re.findall(r"```bash\n(.*?)```", TEXT, flags=re.S)


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """XDG homes under ``tmp_path`` (this process and the environment for subprocesses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("TALLY_CONFIG", raising=False)
    return env


def test_readme_has_examples() -> None:
    assert BLOCKS and SHELL_BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, private_home: dict[str, str]) -> None:
    exec(compile(BLOCKS[index], f"README.md example {index + 1}", "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("index", range(len(SHELL_BLOCKS)))
def test_readme_shell_example_runs(
    index: int, private_home: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", SHELL_BLOCKS[index]],
            cwd=work,
            env=private_home,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if (work / "state").exists():
            subprocess.run(
                [sys.executable, "-m", "tally.cli", "local", "down", "--dir", "state", "--purge"],
                cwd=work,
                env=private_home,
                capture_output=True,
                timeout=60,
            )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if "--plot result.png" in SHELL_BLOCKS[index]:
        assert (work / "result.png").read_bytes().startswith(b"\x89PNG")
