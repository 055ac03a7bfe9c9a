"""Every disclosure-policy rule, refused and allowed, as one party checks a job."""

from __future__ import annotations

from typing import Any

import pytest

from tally.common.policy import DisclosurePolicy
from tally.execution.jobs import JobCreate
from tally.execution.policy import dp_charges, enforce_policies
from tally.execution.ports import DatasetInfo, InputError
from tally.mpc.program import get_program
from tally.mpc.table import ColumnSpec

COLUMNS = {
    "region": ColumnSpec("key", bits=8),
    "views": ColumnSpec("int"),
    "user": ColumnSpec("key"),
}
AGGREGATIONS = {"total": ["views", "sum"], "n": ["views", "count"]}
DP = {"epsilon": 0.5, "delta": 1e-7, "clip": {"views": [0, 50]}}


def info(dataset_id: str, policy: dict[str, Any], owner: str = "bank", **more: Any) -> DatasetInfo:
    return DatasetInfo(
        dataset_id,
        COLUMNS,
        100,
        1,
        True,
        owner=owner,
        policy=DisclosurePolicy.model_validate(policy),
        **more,
    )


def job(
    program: str = "groupby", recipients: tuple[str, ...] = ("analyst",), **changes: Any
) -> JobCreate:
    params: dict[str, Any] = {"keys": ["region"], "aggregations": AGGREGATIONS, "domain": [1, 2]}
    if program == "sort":
        params = {"keys": ["views"]}
    elif program == "sum":
        params = {"column": "views"}
    body: dict[str, Any] = {
        "id": "j",
        "program": program,
        "inputs": {"t": ["a"]},
        "params": params,
        "outputs": {"result": {"kind": "open", "recipients": list(recipients)}},
    }
    body.update(changes)
    return JobCreate.model_validate(body)


def check(spec: JobCreate, *infos: DatasetInfo, submitter: str = "analyst") -> None:
    described = {"t": list(infos)}
    enforce_policies(spec, submitter, get_program(spec.program), described)


def refused(spec: JobCreate, *infos: DatasetInfo, submitter: str = "analyst") -> str:
    with pytest.raises(InputError) as caught:
        check(spec, *infos, submitter=submitter)
    assert caught.value.status == 403 and caught.value.code == "policy_violation"
    return caught.value.detail


def test_by_default_aggregates_only_and_outputs_to_the_submitter_only() -> None:
    default = info("a", {})
    check(job(), default)
    check(job("sum"), default)
    # a use grant is not a read grant: a row-level sort is refused (regression)
    assert "rule programs: program 'sort' is not allowed" in refused(job("sort"), default)
    # any identity named as recipient was accepted (regression)
    detail = refused(job(recipients=("analyst", "mallory")), default)
    assert detail.startswith("dataset a: disclosure policy rule recipients: 'mallory'")


def test_the_owner_is_not_bound_by_its_own_policy() -> None:
    check(job("sort", recipients=("anyone",)), info("a", {}, owner="analyst"), submitter="analyst")


def test_programs_the_owner_lists_are_allowed() -> None:
    check(job("sort"), info("a", {"programs": ["sort"]}))
    assert "program 'groupby'" in refused(job(), info("a", {"programs": ["sort"]}))


def test_recipients_named_readers_and_the_submitter() -> None:
    readers = info("a", {"recipients": {"readers": True}}, readers=("auditor",))
    check(job(recipients=("analyst", "auditor")), readers)
    named = info("a", {"recipients": {"submitter": False, "identities": ["auditor"]}})
    check(job(recipients=("auditor",)), named)
    assert "'analyst' may not receive" in refused(job(), named)


def test_min_group_size_must_be_set_at_least_as_high_and_only_groupby_honours_it() -> None:
    policy = info("a", {"min_group_size": 10})
    assert "set min_group_size to at least 10 (the job sets 0)" in refused(job(), policy)
    low = job(params={"keys": ["region"], "aggregations": AGGREGATIONS, "min_group_size": 5})
    assert "at least 10 (the job sets 5)" in refused(low, policy)
    check(
        job(params={"keys": ["region"], "aggregations": AGGREGATIONS, "min_group_size": 10}), policy
    )
    assert "cannot honour it" in refused(job("sum"), policy)


@pytest.mark.parametrize(
    ("rule", "dp", "words"),
    [
        ({"required": True}, None, "dp.required"),
        ({"epsilon_max": 0.9}, DP, "dp.epsilon_max: the job would spend epsilon 1"),
        ({"delta_max": 1e-7}, DP, "dp.delta_max"),
        ({"clip": {"views": [0, 20]}}, DP, "dp.clip: clip 'views' within [0, 20]"),
        ({"unit": "user"}, DP, "dp.unit: bound contributions per 'user'"),
        (
            {"unit": "user", "max_contributions": 2},
            {**DP, "unit": "user", "max_contributions": 3},
            "dp.max_contributions: at most 2 rows per 'user'",
        ),
    ],
)
def test_every_dp_rule_refuses_a_job_outside_it(
    rule: dict[str, Any], dp: dict[str, Any] | None, words: str
) -> None:
    assert words in refused(job(dp=dp), info("a", {"dp": rule}))


def test_a_job_inside_every_dp_rule_is_allowed() -> None:
    rule = {
        "required": True,
        "epsilon_max": 1.0,
        "delta_max": 5e-7,
        "clip": {"views": [-10, 100]},
        "unit": "user",
        "max_contributions": 3,
    }
    inside = {**DP, "epsilon": 0.25, "unit": "user", "max_contributions": 2}
    check(job(dp=inside), info("a", {"dp": rule}))
    assert dp_charges(job(dp=inside)) == {"a": pytest.approx((1.0, 4e-7))}


def test_two_inputs_the_stricter_rule_of_each_applies() -> None:
    lax = info("a", {"programs": ["groupby", "sort"], "recipients": {"identities": ["auditor"]}})
    strict = info("b", {"min_group_size": 5})
    two = job(inputs={"t": ["a", "b"]}, recipients=("analyst",))
    assert refused(two, lax, strict).startswith("dataset b: disclosure policy rule min_group_size")
    to_auditor = job(
        inputs={"t": ["a", "b"]},
        recipients=("auditor",),
        params={"keys": ["region"], "aggregations": AGGREGATIONS, "min_group_size": 5},
    )
    assert refused(to_auditor, lax, strict).startswith(
        "dataset b: disclosure policy rule recipients"
    )
    assert "dataset b" in refused(job("sort", inputs={"t": ["a", "b"]}), lax, strict)
