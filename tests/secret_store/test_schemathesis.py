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

from tests.fuzzing import Headers, fuzz_schema
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

    def credentials(operation: Any) -> list[Headers]:
        identity = "execution" if operation.path.startswith("/v1/internal") else "alice"
        return [auth(identity), {}]

    cases, failures = fuzz_schema(schema, credentials, EXAMPLES_PER_OPERATION_AND_MODE)
    assert not failures, "\n".join(failures[:20])
    assert cases >= MIN_CASES, f"only {cases} cases generated"
    print(f"schemathesis: {cases} cases, 0 server errors")
