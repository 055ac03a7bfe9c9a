"""Each input's disclosure policy, checked at this party before a job reserves a tuple.

Every party's execution service checks a job against the policies its own
secret-store holds (:mod:`tally.common.policy`), so a job runs only where every
party agrees it may.  A dataset's policy binds every job run for someone other than
its owner; a job reading several datasets must satisfy each one (the intersection).
A refusal is a 403 ``policy_violation`` whose detail names the dataset and the rule
(``programs``, ``recipients``, ``min_group_size``, ``dp.required``, ``dp.epsilon_max``,
``dp.delta_max``, ``dp.clip``, ``dp.unit``, ``dp.max_contributions``) and says what
the job would need — never anything about the data.  The budgets (``dp.budget``,
``dp.delta_budget``) are enforced by the secret-store when the job is charged.

Also here: :func:`dp_charges`, the epsilon and delta a job spends on each input.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

from tally.common.policy import DisclosurePolicy
from tally.execution.jobs import JobCreate
from tally.execution.ports import DatasetInfo, InputError
from tally.execution.programs import BUILTINS, dataset_ids
from tally.mpc.dp import DP
from tally.mpc.groupby import dp_delta, dp_epsilon, summed_columns
from tally.mpc.program import Program


def dp_charges(spec: JobCreate) -> dict[str, tuple[float, float]]:
    """Per input dataset, the (epsilon, delta) a differentially private job spends on it.

    A dataset read K times puts each of its rows K times into the union: by group
    privacy that release costs K epsilon and K e^((K-1) epsilon) delta.
    """
    if spec.dp is None:
        return {}
    dp = DP.from_params(spec.dp)
    epsilon = dp_epsilon(spec.params["aggregations"], dp)
    delta = dp_delta(spec.params["aggregations"], dp)
    reads = Counter(d for ids in spec.inputs.values() for d in dataset_ids(ids))
    return {
        dataset_id: (epsilon * times, min(delta * times * math.exp((times - 1) * epsilon), 0.999))
        for dataset_id, times in sorted(reads.items())
    }


def _refuse(dataset_id: str, rule: str, detail: str) -> InputError:
    return InputError(
        403, "policy_violation", f"dataset {dataset_id}: disclosure policy rule {rule}: {detail}"
    )


def _check_recipients(info: DatasetInfo, spec: JobCreate, submitter: str) -> None:
    rule = info.policy.recipients
    for output, target in spec.outputs.items():
        for recipient in target.recipients:
            allowed = (
                (rule.submitter and recipient == submitter)
                or recipient in rule.identities
                or (rule.readers and recipient in info.readers)
            )
            if not allowed:
                raise _refuse(
                    info.id,
                    "recipients",
                    f"{recipient!r} may not receive output {output!r} (allowed: "
                    + ", ".join(_allowed_recipients(info.policy))
                    + ")",
                )


def _allowed_recipients(policy: DisclosurePolicy) -> list[str]:
    rule = policy.recipients
    named = [repr(i) for i in rule.identities]
    return (
        (["the submitter"] if rule.submitter else [])
        + (["holders of a read grant"] if rule.readers else [])
        + named
    ) or ["nobody"]


def _check_min_group_size(info: DatasetInfo, program: Program, params: Mapping[str, Any]) -> None:
    needed = info.policy.min_group_size
    if needed <= 0:
        return
    if program.name != "groupby":
        raise _refuse(
            info.id,
            "min_group_size",
            f"groups of fewer than {needed} rows must be suppressed, which only the groupby "
            f"program does (program {program.name!r} cannot honour it)",
        )
    given = params.get("min_group_size") or 0
    if not isinstance(given, int) or given < needed:
        raise _refuse(
            info.id,
            "min_group_size",
            f"set min_group_size to at least {needed} (the job sets {given})",
        )


def _check_dp(info: DatasetInfo, spec: JobCreate, spent: tuple[float, float] | None) -> None:
    rule = info.policy.dp
    if spec.dp is None or spent is None:
        if rule.required:
            raise _refuse(
                info.id, "dp.required", "the job must set dp (epsilon, delta, clip bounds)"
            )
        return
    epsilon, delta = spent
    if rule.epsilon_max is not None and epsilon > rule.epsilon_max * (1 + 1e-12):
        raise _refuse(
            info.id,
            "dp.epsilon_max",
            f"the job would spend epsilon {epsilon:g} on it; at most {rule.epsilon_max:g} a job",
        )
    if rule.delta_max is not None and delta > rule.delta_max * (1 + 1e-12):
        raise _refuse(
            info.id,
            "dp.delta_max",
            f"the job would spend delta {delta:g} on it; at most {rule.delta_max:g} a job",
        )
    dp = DP.from_params(spec.dp)
    summed = summed_columns(spec.params.get("aggregations", {}))
    for column in [c for c in summed if c in rule.clip]:
        lo, hi = rule.clip[column]
        given = dp.clip.get(column)
        if given is None or not (lo <= given[0] <= given[1] <= hi):
            raise _refuse(
                info.id,
                "dp.clip",
                f"clip {column!r} within [{lo:g}, {hi:g}] (the job gives {given})",
            )
    if rule.unit is not None:
        if dp.unit != rule.unit:
            raise _refuse(
                info.id,
                "dp.unit",
                f"bound contributions per {rule.unit!r} (dp.unit; the job gives {dp.unit!r})",
            )
        bound = rule.max_contributions
        if bound is not None and dp.max_contributions > bound:
            raise _refuse(
                info.id,
                "dp.max_contributions",
                f"at most {bound} rows per {rule.unit!r} (the job keeps {dp.max_contributions})",
            )


def enforce_policies(
    spec: JobCreate,
    submitter: str,
    program: Program,
    described: Mapping[str, list[DatasetInfo]],
) -> None:
    """Refuse the job (``InputError`` 403) unless every input's policy allows it."""
    charges = dp_charges(spec)
    builtin = (
        program.name
        if program.name in BUILTINS
        and spec.program
        in (
            program.name,
            program.digest,
        )
        else ""
    )
    params = dict(spec.params)
    seen: set[str] = set()
    for infos in described.values():
        for info in infos:
            if info.id in seen or info.owner == submitter:
                continue
            seen.add(info.id)
            if not info.policy.allows_program(builtin, program.digest):
                raise _refuse(
                    info.id,
                    "programs",
                    f"program {program.name!r} is not allowed (allowed: "
                    f"{', '.join(info.policy.programs) or 'none'})",
                )
            _check_recipients(info, spec, submitter)
            _check_min_group_size(info, program, params)
            _check_dp(info, spec, charges.get(info.id))
