"""One Schemathesis loop for every service: positive and negative cases per operation.

:func:`fuzz_schema` sends each operation of an OpenAPI schema ``examples`` positive and
``examples`` negative cases, each with one of the given credentials (or none), and
returns how many cases ran and every 5xx (method, path, status, body start).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

Headers = Mapping[str, str]


def fuzz_schema(
    schema: Any,
    credentials: Callable[[Any], list[Headers]],
    examples: int,
    **call: Any,
) -> tuple[int, list[str]]:
    """(cases run, server errors); ``credentials(operation)`` lists the header sets to try."""
    failures: list[str] = []
    cases = 0

    def fuzz(operation: Any, mode: GenerationMode) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=operation.as_strategy(generation_mode=mode),
            headers=st.sampled_from(credentials(operation)),
        )
        def check(case: Any, headers: Headers) -> None:
            nonlocal cases
            response = case.call(headers=dict(headers), **call)
            cases += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )

        try:
            check()
        except Unsatisfiable:  # nothing to violate (e.g. no parameters): no negative cases
            assert mode is GenerationMode.NEGATIVE, operation.label

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode)
    return cases, failures
