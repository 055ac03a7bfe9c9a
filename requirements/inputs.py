"""The requirements each lock in requirements/ is compiled from, read from pyproject.toml.

    python requirements/inputs.py lock|service|build|operator

prints one requirement a line, for ``uv pip compile -`` (``make lock``):

* ``lock`` (requirements/lock.txt, ``make install`` and CI): the runtime dependencies,
  every optional extra (dev, operator) and the build system's own requirements, so the
  editable install builds without fetching anything unhashed;
* ``service`` (requirements/service.txt, the services image): the runtime dependencies
  without the ones only the client or the build uses (:data:`NOT_IN_SERVICE_IMAGE`);
* ``build`` (requirements/build.txt, the services image's builder stage): what compiles
  the gRPC stubs and builds the wheel;
* ``operator`` (requirements/operator.txt, the operator image): the ``operator`` extra.

pyproject.toml stays the one place dependencies are named; the locks only pin them.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

NOT_IN_SERVICE_IMAGE = frozenset({"click", "rich", "matplotlib", "pyarrow", "grpcio-tools"})
"""Runtime dependencies the services never import: the CLI and SDK's (click, rich,
matplotlib, pyarrow) and the stub compiler's (grpcio-tools, run once at build time)."""

BUILD_TOOLS = frozenset({"grpcio-tools"})
"""Runtime dependencies that the build uses and the services image leaves out."""


def requirement_name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement (``uvicorn[standard]>=1`` →
    ``uvicorn``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def selection(name: str, pyproject: Path = PYPROJECT) -> list[str]:
    """The requirements the lock ``name`` is compiled from."""
    document: dict[str, Any] = tomllib.loads(pyproject.read_text())
    project: dict[str, Any] = document["project"]
    own_name = requirement_name(project["name"])
    runtime: list[str] = list(project.get("dependencies", []))
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    build: list[str] = list(document.get("build-system", {}).get("requires", []))

    def external(requirements: list[str]) -> list[str]:
        # "tally[operator]" inside the dev extra names the project itself
        return [r for r in requirements if requirement_name(r) != own_name]

    if name == "lock":
        every_extra = [r for group in extras.values() for r in external(group)]
        return _unique(runtime + every_extra + build)
    if name == "service":
        return [r for r in runtime if requirement_name(r) not in NOT_IN_SERVICE_IMAGE]
    if name == "build":
        return _unique([r for r in runtime if requirement_name(r) in BUILD_TOOLS] + build)
    if name == "operator":
        return external(extras.get("operator", []))
    raise ValueError(f"no lock named {name!r}: lock, service, build or operator")


def _unique(requirements: list[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for requirement in requirements:
        if requirement not in seen:
            seen.add(requirement)
            kept.append(requirement)
    return kept


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python requirements/inputs.py lock|service|build|operator", file=sys.stderr)
        return 2
    try:
        requirements = selection(argv[0])
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    print("\n".join(requirements))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
