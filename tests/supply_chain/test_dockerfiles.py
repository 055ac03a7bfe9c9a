"""docker/*.Dockerfile read as text (no container engine needed, none is built here).

Each image is multi-stage: a builder installs from a hashed lock with
``--require-hashes`` and wheels only; the runtime stage copies the virtualenv and
nothing else, compiles and installs nothing, and runs as a non-root user. Both stages
start from the ``PYTHON_IMAGE`` build argument (documented with the digest-pinned form),
and every file the build copies is admitted by the image's .dockerignore.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
IMAGES = {
    "service.Dockerfile": {"lock": "requirements/service.txt", "venv": "/opt/tally"},
    "operator.Dockerfile": {"lock": "requirements/operator.txt", "venv": "/opt/operator"},
}
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|apt-get|apk|pip install|pip wheel|"
    r"python3?-dev|libpq-dev)\b"
)


@dataclass
class Stage:
    """One ``FROM ... AS name`` stage: its base and its instructions."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [text for word, text in self.instructions if word == keyword]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults and the stages of a Dockerfile (continuations joined)."""
    lines: list[str] = []
    current = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        lines.append(current + line.strip())
        current = ""
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        word, _, text = line.strip().partition(" ")
        word = word.upper()
        text = " ".join(text.split())
        if word == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", text, flags=re.I)
            assert match is not None, f"every stage is named: {line}"
            stages.append(Stage(match.group(1), match.group(2)))
        elif stages:
            stages[-1].instructions.append((word, text))
        elif word == "ARG":
            name, _, default = text.partition("=")
            arguments[name] = default
    return arguments, stages


@pytest.fixture(params=sorted(IMAGES))
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return DOCKER / request.param


def test_both_stages_start_from_the_python_image_argument(dockerfile: Path) -> None:
    arguments, stages = parse(dockerfile)
    assert [stage.name for stage in stages] == ["build", "runtime"]
    assert {stage.base for stage in stages} == {"${PYTHON_IMAGE}"}
    assert arguments["PYTHON_IMAGE"].startswith("python:3.11-")
    # the default is a tag (no digest is invented); the header shows the pinned form
    assert "@sha256:" not in arguments["PYTHON_IMAGE"]
    assert re.search(r"--build-arg PYTHON_IMAGE=python:\S+@sha256:<digest>", dockerfile.read_text())


def test_the_builder_installs_only_hashed_wheels_from_the_lock(dockerfile: Path) -> None:
    _, (build, _) = parse(dockerfile)
    lock = IMAGES[dockerfile.name]["lock"]
    installs = [
        command
        for run in build.arguments("RUN")
        for command in run.split("&&")
        if re.search(r"\bpip\b.* install ", command) and " -r " in command
    ]
    assert any(f"-r {lock}" in command for command in installs), installs
    for command in installs:
        for flag in ("--require-hashes", "--only-binary=:all:", "--no-deps"):
            assert flag in command, (flag, command)
    assert (ROOT / lock).is_file()


def test_the_runtime_stage_copies_the_virtualenv_and_builds_nothing(dockerfile: Path) -> None:
    _, (_, runtime) = parse(dockerfile)
    venv = IMAGES[dockerfile.name]["venv"]
    assert runtime.arguments("COPY") == [f"--from=build {venv} {venv}"]
    for run in runtime.arguments("RUN"):
        assert not BUILD_TOOLS.search(run), run
        assert "pip uninstall --yes --no-input pip setuptools wheel" in run
    assert runtime.arguments("USER") == ["10001:10001"]
    assert runtime.arguments("ADD") == []


def test_the_runtime_virtualenv_has_no_pip(dockerfile: Path) -> None:
    _, (build, _) = parse(dockerfile)
    venv = IMAGES[dockerfile.name]["venv"]
    made = [run for run in build.arguments("RUN") if f"venv --without-pip {venv}" in run]
    assert made, f"{venv} is made without pip"


def admitted(patterns: list[str], path: str) -> bool:
    """Whether a .dockerignore (``**`` then ``!exceptions``) lets ``path`` into the context."""
    keep = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") or pattern == "**":
            keep = negated
    return keep


def test_every_copied_file_is_in_the_build_context(dockerfile: Path) -> None:
    ignore = Path(f"{dockerfile}.dockerignore").read_text().split()
    _, stages = parse(dockerfile)
    for stage in stages:
        for copy in stage.arguments("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = copy.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert admitted(ignore, source.rstrip("/")), f"{source} is ignored"
