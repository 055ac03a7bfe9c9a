"""Property-based API fuzzing of the execution service: generated requests never get a 5xx.

One party's service (local inputs, development dealer, a one-party consortium) with
its lifespan running; every operation of its OpenAPI schema gets positive and
negative cases, with the analyst's token, the service credential or none, and
nothing a refused request sends is kept (no job record is left by a 4xx).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case
from schemathesis.generation import GenerationMode

from tally.execution.app import create_app
from tally.execution.settings import ExecutionSettings
from tally.mpc.processes import free_ports

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
    app = create_app(service)
    failures: list[str] = []
    cases = 0
    # schemathesis runs the app's lifespan: the job manager and PartyControl are up
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    def fuzz(operation: Any, mode: GenerationMode) -> None:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=operation.as_strategy(generation_mode=mode),
            who=st.sampled_from(["alice", "operator", None]),
        )
        def check(case: Case, who: str | None) -> None:
            nonlocal cases
            headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
            response = case.call(headers=headers)
            cases += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )

        try:
            check()
        except Unsatisfiable:  # nothing to violate: no negative cases
            assert mode is GenerationMode.NEGATIVE, operation.label

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode)
    assert not failures, "\n".join(failures[:20])
    assert cases >= MIN_CASES, f"only {cases} cases generated"
    jobs = tmp_path / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir()), "a refused request left a job"
    print(f"schemathesis (execution): {cases} cases, 0 server errors")
