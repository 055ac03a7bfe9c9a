"""The intersection of several datasets' disclosure policies."""

from __future__ import annotations

from tally.common.policy import DisclosurePolicy, combine, conflicts


def test_the_combined_policy_is_the_strictest_of_each_rule() -> None:
    first = DisclosurePolicy.model_validate(
        {
            "programs": ["groupby", "sort"],
            "recipients": {"readers": True, "identities": ["auditor", "carol"]},
            "min_group_size": 5,
            "dp": {"epsilon_max": 2.0, "clip": {"v": [0, 100]}, "unit": "user"},
        }
    )
    second = DisclosurePolicy.model_validate(
        {
            "programs": ["groupby", "sum"],
            "recipients": {"identities": ["carol"]},
            "min_group_size": 10,
            "dp": {"required": True, "epsilon_max": 1.0, "clip": {"v": [-5, 50]}},
        }
    )
    both = combine([first, second])
    assert both.programs == ["groupby"]
    assert both.recipients.identities == ["carol"] and not both.recipients.readers
    assert both.min_group_size == 10 and both.dp.required and both.dp.epsilon_max == 1.0
    assert both.dp.clip == {"v": (0, 50)} and both.dp.unit == "user"
    assert conflicts([first, second]) == []
    assert combine([]) == DisclosurePolicy()


def test_rules_no_job_can_satisfy_together_are_reported() -> None:
    by_user = DisclosurePolicy.model_validate({"dp": {"unit": "user", "clip": {"v": [0, 1]}}})
    by_home = DisclosurePolicy.model_validate({"dp": {"unit": "home", "clip": {"v": [2, 3]}}})
    found = conflicts([by_user, by_home])
    assert any("different privacy units" in f for f in found)
    assert any("do not overlap" in f for f in found)
