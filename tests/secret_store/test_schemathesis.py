"""Property-based API fuzzing with Schemathesis: generated requests never get a 5xx.

Every operation in the OpenAPI schema gets positive (schema-valid) and negative
(schema-violating) cases, sent with a valid token so that they reach the handlers;
at least 500 cases in all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case
from schemathesis.generation import GenerationMode

from tests.secret_store.conftest import Api, auth

EXAMPLES_PER_OPERATION_AND_MODE = int(os.environ.get("TALLY_SCHEMATHESIS_EXAMPLES", "15"))
MIN_CASES = 500


@pytest.fixture
def backend() -> str:
    """Fuzzing exercises the API layer: one backend suffices and keeps it fast."""
    return "sqlite-local"


def test_generated_requests_never_get_a_server_error(make_api: Callable[..., Api]) -> None:
    api = make_api()
    api.committed()  # something to find
    app = api.client.app  # its lifespan is running: app.state.store is set
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    cases = 0

    def fuzz(operation: Any, identity: str, mode: GenerationMode) -> None:
        @settings(
            max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), authorized=st.booleans())
        def check(case: Case, authorized: bool) -> None:
            nonlocal cases
            headers = auth(identity) if authorized or mode is GenerationMode.POSITIVE else {}
            response = case.call(headers=headers)
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
        identity = "execution" if operation.path.startswith("/v1/internal") else "alice"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, identity, mode)
    assert not failures, "\n".join(failures[:20])
    assert cases >= MIN_CASES, f"only {cases} cases generated"
    print(f"schemathesis: {cases} cases, 0 server errors")
