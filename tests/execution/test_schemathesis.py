"""Property-based API fuzzing of the execution service: generated requests never get a 5xx.

One party's service (local inputs, development dealer, a one-party consortium) with
its lifespan running; every operation of its OpenAPI schema gets positive and
negative cases, with the analyst's token, the service credential or none, and
nothing a refused request sends is kept (no job record is left by a 4xx).
"""

from __future__ import annotations

import os
from pathlib import Path

import schemathesis

from tally.execution.app import create_app
from tally.execution.settings import ExecutionSettings
from tally.mpc.processes import free_ports
from tests.fuzzing import fuzz_schema

EXAMPLES = int(os.environ.get("TALLY_SCHEMATHESIS_EXAMPLES", "15")) * 4
MIN_CASES = 500
TOKENS = {"alice": "alice-token-0123456789abcdef", "operator": "operator-token-0123456789abc"}


def test_generated_requests_never_get_a_server_error(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    service = ExecutionSettings(
        party=0,
        peers=[f"127.0.0.1:{port}"],
        state_dir=tmp_path,
        tokens=[  # type: ignore[list-item]
            {"identity": "alice", "token": TOKENS["alice"]},
            {"identity": "operator", "token": TOKENS["operator"], "service": True},
        ],
    )
    # schemathesis runs the app's lifespan: the job manager and PartyControl are up
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(service))
    headers = [{"Authorization": f"Bearer {token}"} for token in TOKENS.values()] + [{}]
    cases, failures = fuzz_schema(schema, lambda _: headers, EXAMPLES)
    assert not failures, "\n".join(failures[:20])
    assert cases >= MIN_CASES, f"only {cases} cases generated"
    jobs = tmp_path / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir()), "a refused request left a job"
    print(f"schemathesis (execution): {cases} cases, 0 server errors")
