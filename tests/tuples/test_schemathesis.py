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

import pytest
import schemathesis

from tests.fuzzing import fuzz_schema
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
    headers = [{"Authorization": f"Bearer {token}"} for token in tokens.values()] + [{}]
    cases, failures = fuzz_schema(schema, lambda _: headers, EXAMPLES, timeout=60)
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
