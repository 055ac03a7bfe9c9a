"""Property-based API fuzzing of the tuple-service: generated requests never get a 5xx.

Three tuple-service processes (SQLite); schemathesis reads party 0's OpenAPI schema
over HTTP and sends positive and negative cases with the execution service's token,
a monitoring-scoped token or none.  Afterwards the pools still reconstruct: no
generated request corrupted or handed out what it should not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case
from schemathesis.generation import GenerationMode

from tests.tuples.cluster import MONITOR_TOKEN, Cluster
from tests.tuples.relations import EVERY_KIND, check_every_kind, sources

EXAMPLES = int(os.environ.get("TALLY_SCHEMATHESIS_EXAMPLES", "15")) * 3
MIN_CASES = 500


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(Path(tmp_path_factory.mktemp("fuzz")), chunk_size=1 << 12).start_all()
    try:
        yield running
    finally:
        running.stop()


def test_generated_requests_never_get_a_server_error(cluster: Cluster) -> None:
    schema = schemathesis.openapi.from_url(cluster.url(0) + "/openapi.json")
    tokens = {"execution": cluster.token(0), "monitor": MONITOR_TOKEN}
    failures: list[str] = []
    cases = 0

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
            who=st.sampled_from(["execution", "monitor", None]),
        )
        def check(case: Case, who: str | None) -> None:
            nonlocal cases
            headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
            response = case.call(headers=headers, timeout=60)
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
    # the service still works as it should after the fuzzing
    response = cluster.post(
        0,
        "/v1/reservations",
        {"job_id": "after-fuzz", "tuples": EVERY_KIND, "generate_missing": True},
    )
    assert response.status_code == 201, response.text
    check_every_kind(sources(cluster, response.json()["reservation_id"]))
    print(f"schemathesis (tuple-service): {cases} cases, 0 server errors")
