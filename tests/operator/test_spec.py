"""Validation of AnalyticsJob and Consortium specs."""

from __future__ import annotations

from typing import Any

import pytest

from tally_operator.consortium import parse_consortium_spec
from tally_operator.spec import InvalidSpecError, SpecLimits, parse_analytics_job_spec

VALID: dict[str, Any] = {
    "program": "groupby",
    "inputs": [{"name": "views", "dataset": "ds-1"}, {"name": "clicks", "datasets": ["a", "b"]}],
    "params": {"keys": ["region"]},
    "outputs": [{"name": "totals", "kind": "shares", "recipients": ["alice", "bob"]}],
    "partitions": 8,
    "dp": {"epsilon": 1.0, "delta": 1e-6, "clip": {"views": [0, 100]}},
    "scheduling": {"zone": "eu-1a", "spot": True, "maxRestarts": 5},
    "credentials": {"secretRef": {"name": "analyst-token", "key": "bearer"}},
}


def parse(spec: dict[str, Any], **limits: Any):  # type: ignore[no-untyped-def]
    return parse_analytics_job_spec(spec, name="sales", limits=SpecLimits(**limits))


def test_valid_spec_becomes_the_execution_request() -> None:
    parsed = parse(VALID)
    assert parsed.job_id == "sales" and parsed.consortium == "tally"
    assert parsed.scheduling.zone == "eu-1a" and parsed.scheduling.max_restarts == 5
    assert parsed.execution_request() == {
        "id": "sales",
        "program": "groupby",
        "inputs": {"views": "ds-1", "clicks": ["a", "b"]},
        "params": {"keys": ["region"]},
        "outputs": {"totals": {"kind": "shares", "recipients": ["alice", "bob"]}},
        "partitions": 8,
        "dp": {"epsilon": 1.0, "delta": 1e-6, "clip": {"views": [0.0, 100.0]}},
    }


def test_a_query_job_carries_its_sql_to_the_execution_service() -> None:
    """Issue 15: an AnalyticsJob with ``program: query`` and ``params.sql``."""
    sql = "SELECT campaign, SUM(amount) FROM views JOIN buys USING (user_id) GROUP BY campaign"
    spec = {
        **{k: VALID[k] for k in ("outputs", "credentials")},
        "program": "query",
        "inputs": [{"name": "views", "dataset": "ds-v"}, {"name": "buys", "dataset": "ds-b"}],
        "params": {"sql": sql},
    }
    request = parse(spec).execution_request()
    assert request["program"] == "query" and request["params"] == {"sql": sql}
    assert request["inputs"] == {"views": "ds-v", "buys": "ds-b"}


def test_defaults_come_from_the_limits() -> None:
    minimal = {k: VALID[k] for k in ("program", "inputs", "outputs", "credentials")}
    parsed = parse(minimal, default_max_restarts=7, default_consortium="acme")
    assert parsed.partitions == 1 and parsed.dp is None
    assert parsed.scheduling.spot is False and parsed.scheduling.max_restarts == 7
    assert parsed.consortium == "acme"
    assert (parsed.credentials.secret_name, parsed.credentials.key) == ("analyst-token", "bearer")
    defaulted = parse({**minimal, "credentials": {"secretRef": {"name": "t"}}})
    assert defaulted.credentials.key == "token"
    pinned = parse({**minimal, "program": "sha256:" + "ab" * 32})
    assert pinned.program.startswith("sha256:")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"program": "Group By"}, "spec.program"),
        ({"program": "sha256:xyz"}, "spec.program"),
        ({"inputs": []}, "spec.inputs"),
        ({"inputs": [{"name": "v", "dataset": "a", "datasets": ["b"]}]}, "either 'dataset'"),
        ({"inputs": [{"name": "v", "dataset": "a"}, {"name": "v", "dataset": "b"}]}, "unique"),
        ({"outputs": [{"name": "t", "recipients": []}]}, "recipients"),
        ({"outputs": [{"name": "t", "kind": "print", "recipients": ["a"]}]}, ".kind"),
        ({"partitions": 0}, "spec.partitions"),
        ({"partitions": 9}, "from 1 to 8"),
        ({"partitions": True}, "spec.partitions"),
        ({"dp": {"epsilon": 0}}, "spec.dp.epsilon"),
        ({"dp": {"epsilon": 1, "delta": 1}}, "spec.dp.delta"),
        ({"dp": {"epsilon": 1, "delta": 1e-6, "sensitivity": 1}}, "spec.dp.sensitivity"),
        ({"dp": {"epsilon": 1, "delta": 1e-6, "clip": {"v": [3, 1]}}}, "spec.dp.clip.v"),
        ({"dp": {"epsilon": 1, "delta": 1e-6, "maxContributions": 0}}, "maxContributions"),
        ({"scheduling": {"maxRestarts": -1}}, "maxRestarts"),
        ({"scheduling": {"spot": "yes"}}, "spot"),
        ({"jobId": "Not_A_Label"}, "spec.jobId"),
        ({"jobId": "a" * 51}, "at most 50 characters"),
        ({"resources": {"gpus": 1}}, "spec.resources"),
        ({"credentials": None}, "spec.credentials.secretRef.name"),
        ({"credentials": {"secretRef": {"name": "Bad_Name"}}}, "spec.credentials.secretRef"),
        ({"credentials": {"secretRef": {"name": "t", "key": "a/b"}}}, "secretRef.key"),
    ],
)
def test_invalid_specs_name_the_field(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse({**VALID, **change}, max_partitions=8)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse({"program": 5, "partitions": -1})
    fields = " ".join(caught.value.problems)
    for field in ("spec.program", "spec.inputs", "spec.outputs", "spec.partitions"):
        assert field in fields


def party(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"p{i}", "index": i, "endpoints": {"partyLink": f"p{i}.example:7100"}, **extra}


def test_consortium_defaults_to_hm3_for_three_parties() -> None:
    consortium = parse_consortium_spec(
        {"localParty": "p0", "parties": [party(i) for i in range(3)]}
    )
    assert consortium.tuple_generator == "hm3"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"localParty": "p0", "parties": [party(0)]}, "at least two"),
        ({"localParty": "p9", "parties": [party(0), party(1)]}, "localParty"),
        ({"localParty": "p0", "parties": [party(0), party(0)]}, "unique"),
        ({"localParty": "p0", "parties": [party(0), party(2)]}, "indices"),
        ({"localParty": "p0", "parties": [party(0), party(1)], "tupleGenerator": "hm3"}, "hm3"),
        ({"localParty": "p0", "parties": [party(0), {**party(1), "endpoints": {}}]}, "partyLink"),
    ],
)
def test_invalid_consortia_are_refused(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_consortium_spec(spec)
    assert problem in str(caught.value)


def test_the_longest_job_id_is_the_execution_services() -> None:
    from tally.common.job_ids import JOB_NAME_MAX as service_max
    from tally_operator.spec import JOB_NAME_MAX

    assert service_max == JOB_NAME_MAX
