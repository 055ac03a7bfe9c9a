"""The AnalyticsJob spec as a validated, typed model.

The CRD's OpenAPI schema already rejects most malformed specs at the API server; this
module checks them again (an API server may run an older CRD, and tests run without
one) and adds what a schema cannot say: limits from the operator's configuration and
cross-field rules. All problems are collected, so the status condition of a rejected
job lists every one of them at once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

PROGRAM_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
PROGRAM_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
JOB_NAME_MAX = 50
"""Longest job id a client may give (tally.execution.jobs.JOB_NAME_MAX)."""
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
OUTPUT_KINDS = ("shares", "open")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


class InvalidSpecError(ValueError):
    """An AnalyticsJob spec that the operator refuses; ``problems`` lists why."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class InputRef:
    """Datasets in this party's secret-store (rows concatenated), bound to a program input."""

    name: str
    datasets: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """One output: result shares in every party's secret-store, or opened to recipients."""

    name: str
    kind: Literal["shares", "open"]
    recipients: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class DpSpec:
    """Differential-privacy parameters of the binomial mechanism (DESIGN §6.5)."""

    epsilon: float
    delta: float
    clip: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    """Column -> [lo, hi]: every summed column's bounds (its sensitivity follows from them)."""
    unit: str | None = None
    max_contributions: int = 1


@dataclasses.dataclass(frozen=True)
class CredentialsRef:
    """The Secret (in the job's namespace) that holds the analyst's own bearer token.

    The operator submits the job with that token, never with its own: the execution
    service then checks the analyst's grants and every input's disclosure policy.
    """

    secret_name: str
    key: str = "token"


@dataclasses.dataclass(frozen=True)
class SchedulingSpec:
    """Where workers may run and how many preemptions the job survives."""

    zone: str | None
    spot: bool
    max_restarts: int


@dataclasses.dataclass(frozen=True)
class AnalyticsJobSpec:
    """A validated AnalyticsJob spec."""

    job_id: str
    consortium: str
    program: str
    inputs: tuple[InputRef, ...]
    params: Mapping[str, Any]
    outputs: tuple[OutputSpec, ...]
    partitions: int
    dp: DpSpec | None
    scheduling: SchedulingSpec
    resources: Mapping[str, Any] | None
    credentials: CredentialsRef = CredentialsRef("")

    def execution_request(self) -> dict[str, Any]:
        """The body of ``POST /v1/jobs`` at the execution service."""
        request: dict[str, Any] = {
            "id": self.job_id,
            "program": self.program,
            "inputs": {
                i.name: i.datasets[0] if len(i.datasets) == 1 else list(i.datasets)
                for i in self.inputs
            },
            "params": dict(self.params),
            "outputs": {
                o.name: {"kind": o.kind, "recipients": list(o.recipients)} for o in self.outputs
            },
            "partitions": self.partitions,
            "dp": None,
        }
        if self.dp is not None:
            dp: dict[str, Any] = {"epsilon": self.dp.epsilon, "delta": self.dp.delta}
            if self.dp.clip:
                dp["clip"] = {k: list(v) for k, v in self.dp.clip.items()}
            if self.dp.unit is not None:
                dp["unit"], dp["max_contributions"] = self.dp.unit, self.dp.max_contributions
            request["dp"] = dp
        return request


@dataclasses.dataclass(frozen=True)
class SpecLimits:
    """Bounds and defaults that come from the operator's configuration."""

    max_partitions: int = 256
    default_max_restarts: int = 3
    default_consortium: str = "tally"


def parse_analytics_job_spec(
    spec: Mapping[str, Any], *, name: str, limits: SpecLimits
) -> AnalyticsJobSpec:
    """Validate the spec of AnalyticsJob ``name``; InvalidSpecError lists all problems."""
    problems: list[str] = []

    job_id = spec.get("jobId", name)
    if not isinstance(job_id, str) or not DNS_LABEL.match(job_id):
        problems.append(f"spec.jobId: must be a DNS label (lowercase, digits, '-'), got {job_id!r}")
    elif len(job_id) > JOB_NAME_MAX:
        problems.append(
            f"spec.jobId: at most {JOB_NAME_MAX} characters (the execution service appends "
            f"13 that scope it to the analyst), got {len(job_id)}: set a shorter spec.jobId"
        )
    consortium = spec.get("consortium", limits.default_consortium)
    if not isinstance(consortium, str) or not DNS_LABEL.match(consortium):
        problems.append(f"spec.consortium: must name a Consortium, got {consortium!r}")

    program = spec.get("program")
    if not isinstance(program, str) or not (
        PROGRAM_NAME.match(program) or PROGRAM_HASH.match(program)
    ):
        problems.append(
            "spec.program: must be a built-in program name or a pinned hash "
            f"'sha256:<64 hex digits>', got {program!r}"
        )

    inputs = _parse_inputs(spec.get("inputs"), problems)
    outputs = _parse_outputs(spec.get("outputs"), problems)

    params = spec.get("params", {})
    if not isinstance(params, Mapping):
        problems.append(f"spec.params: must be an object, got {type(params).__name__}")
        params = {}

    partitions = spec.get("partitions", 1)
    if not _is_int(partitions) or not 1 <= partitions <= min(limits.max_partitions, 1024):
        problems.append(
            f"spec.partitions: must be an integer from 1 to {min(limits.max_partitions, 1024)}, "
            f"got {partitions!r}"
        )

    dp = _parse_dp(spec.get("dp"), problems)
    credentials = _parse_credentials(spec.get("credentials"), problems)
    scheduling = _parse_scheduling(spec.get("scheduling", {}), limits, problems)

    resources = spec.get("resources")
    if resources is not None and not (
        isinstance(resources, Mapping) and set(resources) <= {"requests", "limits"}
    ):
        problems.append("spec.resources: must be an object with 'requests' and/or 'limits'")

    if problems:
        raise InvalidSpecError(problems)
    return AnalyticsJobSpec(
        job_id=str(job_id),
        consortium=str(consortium),
        program=str(program),
        inputs=inputs,
        params=dict(params),
        outputs=outputs,
        partitions=int(partitions),
        dp=dp,
        scheduling=scheduling,
        resources=dict(resources) if isinstance(resources, Mapping) else None,
        credentials=credentials,
    )


def _parse_credentials(raw: object, problems: list[str]) -> CredentialsRef:
    ref = raw.get("secretRef") if isinstance(raw, Mapping) else None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name):
        problems.append(
            "spec.credentials.secretRef.name: must name a Secret in the job's namespace that "
            "holds your own token (the operator never submits with its own), got "
            f"{name!r}"
        )
        return CredentialsRef("")
    key = ref.get("key", "token") if isinstance(ref, Mapping) else "token"
    if not isinstance(key, str) or not SECRET_KEY.match(key):
        problems.append(f"spec.credentials.secretRef.key: must be a Secret data key, got {key!r}")
        key = "token"
    return CredentialsRef(name, key)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _parse_inputs(raw: object, problems: list[str]) -> tuple[InputRef, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append("spec.inputs: must list at least one input dataset")
        return ()
    inputs: list[InputRef] = []
    for index, item in enumerate(raw):
        where = f"spec.inputs[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: must be an object with 'name' and 'dataset'")
            continue
        name = item.get("name")
        single, several = item.get("dataset"), item.get("datasets")
        datasets = [single] if several is None else several
        if not isinstance(name, str) or not IDENTIFIER.match(name):
            problems.append(f"{where}.name: must be an identifier, got {name!r}")
        if (single is None) == (several is None) or not (
            isinstance(datasets, list)
            and datasets
            and all(isinstance(d, str) and d for d in datasets)
        ):
            problems.append(f"{where}: needs either 'dataset' or a non-empty 'datasets' list")
        elif isinstance(name, str):
            inputs.append(InputRef(name=name, datasets=tuple(datasets)))
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        problems.append(f"spec.inputs: names must be unique, got {names}")
    return tuple(inputs)


def _parse_outputs(raw: object, problems: list[str]) -> tuple[OutputSpec, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append("spec.outputs: must list at least one output")
        return ()
    outputs: list[OutputSpec] = []
    for index, item in enumerate(raw):
        where = f"spec.outputs[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: must be an object with 'name' and 'recipients'")
            continue
        name, kind = item.get("name"), item.get("kind", "shares")
        recipients = item.get("recipients")
        if not isinstance(name, str) or not IDENTIFIER.match(name):
            problems.append(f"{where}.name: must be an identifier, got {name!r}")
        if kind not in OUTPUT_KINDS:
            problems.append(f"{where}.kind: must be one of {list(OUTPUT_KINDS)}, got {kind!r}")
        if (
            not isinstance(recipients, list)
            or not recipients
            or not all(isinstance(r, str) and r for r in recipients)
        ):
            problems.append(f"{where}.recipients: must name at least one recipient")
            recipients = []
        if isinstance(name, str) and kind in OUTPUT_KINDS:
            outputs.append(OutputSpec(name=name, kind=kind, recipients=tuple(recipients)))
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        problems.append(f"spec.outputs: names must be unique, got {names}")
    return tuple(outputs)


def _parse_dp(raw: object, problems: list[str]) -> DpSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append("spec.dp: must be an object with epsilon, delta and clip")
        return None
    epsilon = _number(raw.get("epsilon"))
    delta = _number(raw.get("delta", 0.0))
    if epsilon is None or not epsilon > 0:
        problems.append(f"spec.dp.epsilon: must be a positive number, got {raw.get('epsilon')!r}")
    if delta is None or not 0 < delta < 1:
        problems.append(f"spec.dp.delta: must be in (0, 1), got {raw.get('delta')!r}")
    if "sensitivity" in raw:
        problems.append(
            "spec.dp.sensitivity: not set by the analyst; it follows from spec.dp.clip "
            "({column: [lo, hi]}) and the privacy unit's maxContributions"
        )
    clip: dict[str, list[float]] = {}
    raw_clip = raw.get("clip", {})
    if not isinstance(raw_clip, Mapping):
        problems.append("spec.dp.clip: must map column names to [lo, hi]")
        raw_clip = {}
    for column, bounds in raw_clip.items():
        pair = [_number(b) for b in bounds] if isinstance(bounds, (list, tuple)) else []
        if len(pair) != 2 or pair[0] is None or pair[1] is None or not pair[0] < pair[1]:
            problems.append(f"spec.dp.clip.{column}: must be [lo, hi] with lo < hi")
            continue
        clip[str(column)] = [float(pair[0]), float(pair[1])]
    unit = raw.get("unit")
    if unit is not None and not (isinstance(unit, str) and unit):
        problems.append("spec.dp.unit: must be a column name")
    limit = raw.get("maxContributions", 1)
    if not (isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= 1000):
        problems.append(f"spec.dp.maxContributions: must be an integer in 1..1000, got {limit!r}")
        limit = 1
    if epsilon is None or delta is None:
        return None
    return DpSpec(epsilon, delta, clip, unit if isinstance(unit, str) else None, limit)


def _parse_scheduling(raw: object, limits: SpecLimits, problems: list[str]) -> SchedulingSpec:
    if not isinstance(raw, Mapping):
        problems.append("spec.scheduling: must be an object")
        raw = {}
    zone = raw.get("zone")
    if zone is not None and (not isinstance(zone, str) or not zone):
        problems.append(f"spec.scheduling.zone: must be a zone name, got {zone!r}")
        zone = None
    spot = raw.get("spot", False)
    if not isinstance(spot, bool):
        problems.append(f"spec.scheduling.spot: must be true or false, got {spot!r}")
        spot = False
    max_restarts = raw.get("maxRestarts", limits.default_max_restarts)
    if not _is_int(max_restarts) or not 0 <= max_restarts <= 100:
        problems.append(
            f"spec.scheduling.maxRestarts: must be an integer from 0 to 100, got {max_restarts!r}"
        )
        max_restarts = limits.default_max_restarts
    return SchedulingSpec(zone=zone, spot=spot, max_restarts=int(max_restarts))
