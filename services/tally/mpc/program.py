"""Analytics programs: plain Python functions over ``SecretTable`` objects that every party runs.

    @program("top_regions")
    def top_regions(tables, *, keys, column):
        table = tables["views"]
        return {"result": table.group_by(keys).agg(total=(column, "sum"))}

A program receives its input tables by name (this party's shares) and its
public parameters as keyword arguments, and returns named output tables.
It must be deterministic and branch only on public values (shapes, params,
opened outputs), so that every party runs the same rounds in the same order.
The registry pins each program by the SHA-256 of its source, which is what a
job names and what a party's policy allows.  Built-in programs (``groupby``,
``sort``, ``sum``, ``count``) are defined the same way in
:mod:`tally.mpc.programs`.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tally.mpc.table import SecretTable

ProgramFunction = Callable[..., Mapping[str, SecretTable]]


@dataclass(frozen=True)
class Program:
    """A registered program: its name, the hash of its source and the function."""

    name: str
    digest: str
    function: ProgramFunction

    def __call__(self, tables: Mapping[str, SecretTable], **params: Any) -> dict[str, SecretTable]:
        outputs = self.function(tables, **params)
        if not isinstance(outputs, Mapping) or not all(
            isinstance(v, SecretTable) for v in outputs.values()
        ):
            raise TypeError(f"program {self.name!r} must return a mapping of name -> SecretTable")
        return dict(outputs)


_REGISTRY: dict[str, Program] = {}


def program(name: str | None = None) -> Callable[[ProgramFunction], Program]:
    """Register a function as an analytics program (by name and by source hash)."""

    def register(function: ProgramFunction) -> Program:
        source = inspect.getsource(function)
        digest = hashlib.sha256(source.encode()).hexdigest()
        registered = Program(name or function.__name__, digest, function)
        existing = _REGISTRY.get(registered.name)
        if existing is not None and existing.digest != digest:
            raise ValueError(f"another program is already registered as {registered.name!r}")
        _REGISTRY[registered.name] = registered
        return registered

    return register


def get_program(name_or_digest: str) -> Program:
    """Look a program up by name or by the SHA-256 of its source."""
    import tally.mpc.programs  # noqa: F401 - registers the built-ins

    if name_or_digest in _REGISTRY:
        return _REGISTRY[name_or_digest]
    for registered in _REGISTRY.values():
        if registered.digest == name_or_digest:
            return registered
    raise KeyError(f"unknown program {name_or_digest!r}; known: {sorted(_REGISTRY)}")


def registered_programs() -> dict[str, Program]:
    """All programs registered so far, by name."""
    import tally.mpc.programs  # noqa: F401

    return dict(_REGISTRY)
