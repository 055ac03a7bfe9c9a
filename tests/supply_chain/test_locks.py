"""The hashed locks in requirements/ against pyproject.toml (no network).

``make install`` and CI install requirements/lock.txt with ``--require-hashes``; the
images install requirements/service.txt, build.txt and operator.txt. These tests fail
when pyproject.toml names a dependency (runtime, an extra, or the build system's) that a
lock does not pin, pins at a version outside the declared range, or pins without a
sha256 hash — the lock is then stale: run ``make lock``. They also check that the image
locks pin what CI tested, and that the services import without the libraries their
image leaves out.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
IMAGE_LOCKS = ("service", "build", "operator")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})$")


def load_inputs() -> ModuleType:
    """requirements/inputs.py, the selection ``make lock`` compiles each lock from."""
    spec = importlib.util.spec_from_file_location("lock_inputs", REQUIREMENTS / "inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inputs = load_inputs()


@dataclass(frozen=True)
class Pin:
    """One entry of a lock: ``name==version ; marker`` and its hashes."""

    name: str
    version: str
    marker: str
    hashes: tuple[str, ...]


def parse_lock(text: str) -> list[Pin]:
    """The entries of a pip requirements file; raises on anything but hashed ``==`` pins."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            logical.append(current.strip())
        current = ""
    pins = []
    for entry in logical:
        requirement_text, *options = re.split(r"\s+(?=--)", entry)
        hashes = []
        for option in options:
            match = HASH.match(option)
            if match is None:
                raise ValueError(f"{requirement_text}: {option!r} is not a sha256 hash")
            hashes.append(match.group(1))
        requirement = Requirement(requirement_text)
        specifiers = list(requirement.specifier)
        if requirement.url or len(specifiers) != 1 or specifiers[0].operator != "==":
            raise ValueError(f"{requirement_text!r} is not pinned with ==")
        if not hashes:
            raise ValueError(f"{requirement_text!r} has no hash")
        pins.append(
            Pin(
                canonicalize_name(requirement.name),
                specifiers[0].version,
                str(requirement.marker or ""),
                tuple(hashes),
            )
        )
    return pins


def unpinned(requirements: list[str], pins: list[Pin]) -> list[str]:
    """What of ``requirements`` (PEP 508 strings) the pins leave out or pin out of range;
    for a requirement with extras (``uvicorn[standard]``), also what those extras add,
    as the installed distribution's metadata says."""
    pinned = {pin.name: pin.version for pin in pins}
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pinned:
            problems.append(f"{text}: not in the lock")
            continue
        if not requirement.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{text}: the lock pins {pinned[name]}")
            continue
        if requirement.extras:
            problems += [
                f"{text}: {extra_requirement} (of its extras) not in the lock"
                for extra_requirement in extra_requirements(name, requirement.extras)
                if canonicalize_name(Requirement(extra_requirement).name) not in pinned
            ]
    return problems


def extra_requirements(name: str, extras: set[str]) -> list[str]:
    """What installing ``name[extras]`` adds on Linux with this Python, from its metadata."""
    added = []
    for text in importlib.metadata.requires(name) or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or "extra" not in str(marker):
            continue
        if any(marker.evaluate({"extra": extra, "sys_platform": "linux"}) for extra in extras):
            added.append(text)
    return added


def lock(name: str) -> list[Pin]:
    return parse_lock((REQUIREMENTS / f"{name}.txt").read_text())


# --- the real locks -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lock", *IMAGE_LOCKS])
def test_every_pin_of_every_lock_has_sha256_hashes(name: str) -> None:
    assert lock(name)  # parse_lock raises on an unhashed or unpinned entry


@pytest.mark.parametrize("name", ["lock", *IMAGE_LOCKS])
def test_the_lock_pins_every_dependency_pyproject_names(name: str) -> None:
    problems = unpinned(inputs.selection(name), lock(name))
    assert problems == [], f"requirements/{name}.txt is stale, run `make lock`: {problems}"


def test_the_main_lock_covers_runtime_every_extra_and_the_build_system() -> None:
    import tomllib

    document = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = document["project"]
    named = {inputs.requirement_name(r) for r in project["dependencies"]}
    for group in project["optional-dependencies"].values():
        named |= {inputs.requirement_name(r) for r in group}
    named |= {inputs.requirement_name(r) for r in document["build-system"]["requires"]}
    named.discard(inputs.requirement_name(project["name"]))
    assert named <= {pin.name for pin in lock("lock")}


@pytest.mark.parametrize("name", IMAGE_LOCKS)
def test_the_images_pin_the_versions_ci_tests(name: str) -> None:
    tested: dict[str, set[str]] = {}
    for pin in lock("lock"):
        tested.setdefault(pin.name, set()).add(pin.version)
    for pin in lock(name):
        assert pin.version in tested.get(pin.name, set()), (name, pin)


def test_the_services_image_leaves_out_client_only_libraries_and_build_tools() -> None:
    service = {pin.name for pin in lock("service")}
    for left_out in ("matplotlib", "rich", "pyarrow", "grpcio-tools", "setuptools", "pip"):
        assert left_out not in service, left_out
    assert {"grpcio-tools", "setuptools", "wheel"} <= {pin.name for pin in lock("build")}
    operator = {pin.name for pin in lock("operator")}
    assert "kopf" in operator and "numpy" not in operator and "grpcio" not in operator


def test_the_service_packages_import_without_what_their_image_leaves_out() -> None:
    service = {pin.name for pin in lock("service")}
    left_out = sorted(
        {"grpcio-tools": "grpc_tools"}.get(name, name)
        for name in inputs.NOT_IN_SERVICE_IMAGE
        if name not in service
    )
    assert {"matplotlib", "rich", "pyarrow", "grpc_tools"} <= set(left_out)
    # Every module of the three services and what they stand on, with the left-out
    # libraries made unimportable (sys.modules[name] = None raises ImportError).
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        for name in {left_out!r}:
            sys.modules[name] = None
        import tally
        for package in ("tally.mpc", "tally.common", "tally.secret_store", "tally.tuples",
                        "tally.execution", "tally._generated"):
            module = importlib.import_module(package)
            for info in pkgutil.walk_packages(module.__path__, package + "."):
                if ".migrations" not in info.name:
                    importlib.import_module(info.name)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]


# --- the checks themselves ------------------------------------------------------------

GOOD = "numpy==2.4.6 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via -r -\n"


def test_a_dependency_missing_from_the_lock_is_reported() -> None:
    assert unpinned(["numpy>=1.26"], parse_lock(GOOD)) == []
    assert unpinned(["numpy>=1.26", "kubernetes-asyncio>=30"], parse_lock(GOOD)) == [
        "kubernetes-asyncio>=30: not in the lock"
    ]
    assert unpinned(["numpy>=3"], parse_lock(GOOD)) == ["numpy>=3: the lock pins 2.4.6"]


@pytest.mark.parametrize(
    "text",
    [
        "numpy==2.4.6\n",
        "numpy>=2.4 \\\n    --hash=sha256:" + "a" * 64 + "\n",
        "numpy==2.4.6 \\\n    --hash=md5:" + "a" * 32 + "\n",
        "numpy==2.4.6 \\\n    --hash=sha256:abc\n",
        "-e . \\\n    --hash=sha256:" + "a" * 64 + "\n",
    ],
)
def test_an_unhashed_or_unpinned_entry_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_lock(text)


def test_the_extras_of_a_dependency_must_be_locked_too() -> None:
    pins = [Pin("uvicorn", importlib.metadata.version("uvicorn"), "", ("a" * 64,))]
    problems = unpinned(["uvicorn[standard]>=0.30"], pins)
    assert problems and all("(of its extras) not in the lock" in p for p in problems)
    assert any("httptools" in p for p in problems)


def test_a_dependency_added_to_pyproject_makes_the_lock_stale(tmp_path: Path) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    added = pyproject.replace('"kopf>=1.37",', '"kopf>=1.37",\n    "pyfiglet>=1.0",', 1)
    assert added != pyproject
    (tmp_path / "pyproject.toml").write_text(added)
    for name in ("lock", "operator"):
        selected = inputs.selection(name, tmp_path / "pyproject.toml")
        assert unpinned(selected, lock(name)) == ["pyfiglet>=1.0: not in the lock"]
