"""The execution-worker Job of an AnalyticsJob: an Indexed ``batch/v1`` Job.

One pod per partition (``completions = parallelism = partitions``); the pod's
completion index is its partition. ``podFailurePolicy`` makes preemption free:

1. a pod with the ``DisruptionTarget`` condition (preempted, evicted, drained, its
   node deleted) is *ignored*: the Job controller starts a replacement without
   counting a failure, and the replacement resumes from the newest checkpoint that
   all parties hold (DESIGN §7) — workers always start with ``TALLY_RESUME=true``;
2. a worker that exits with ``WORKER_PERMANENT_FAILURE_EXIT_CODE`` fails the Job at
   once (no retry fixes a bad program or a missing dataset);
3. any other failure counts against ``backoffLimit``.

The operator's own restart accounting (``maxRestarts``) sits on top of rule 1.

The pods run ``python -m tally.execution.pod`` (the execution service runs with
``TALLY_EXECUTION_WORKERS=external``): the worker reads ``TALLY_JOB_ID`` and
``TALLY_PARTITION`` (or Kubernetes' ``JOB_COMPLETION_INDEX``), the party's
``TALLY_EXECUTION_*`` settings from the ``env_configmap``/``env_secret`` (its
credential ``TALLY_EXECUTION_WORKER_TOKEN`` among them) and ``TALLY_EXECUTION_URL``,
fetches the job from the execution service, reports its progress there and keeps its
checkpoints in the party's blob store.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from tally_operator.builders.scheduling import Placement, node_affinity, tolerations
from tally_operator.resources import (
    ANALYTICS_JOB_KIND,
    API_VERSION,
    COMPLETION_INDEX_ANNOTATION,
    LABEL_ANALYTICS_JOB,
    LABEL_CONSORTIUM,
    WORKER_CONTAINER,
    WORKER_LABELS,
    WORKER_PERMANENT_FAILURE_EXIT_CODE,
)
from tally_operator.spec import AnalyticsJobSpec

RUN_AS_USER = 10001
MAX_JOB_NAME = 52  # pod hostnames are "<job>-<index>" and must fit in 63 characters
CONSORTIUM_MOUNT = "/etc/tally/consortium"
TLS_MOUNT = "/etc/tally/tls"
REST_CA_MOUNT = "/etc/tally/rest"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerTemplate:
    """The cluster-side settings of workers (from the operator's configuration)."""

    image: str
    command: Sequence[str]
    party_id: str
    execution_url: str
    service_account: str
    resources: Mapping[str, Any]
    backoff_limit: int
    ttl_seconds: int
    spot_tolerations: Sequence[Mapping[str, Any]]
    spot_node_labels: Sequence[tuple[str, str]]
    env_configmap: str | None = None
    env_secret: str | None = None
    partylink_tls_secret: str | None = None
    priority_class: str | None = None
    rest_tls_secret: str | None = None
    """Only its ca.crt reaches workers (they verify the execution service's HTTPS)."""


@dataclasses.dataclass(frozen=True)
class Owner:
    """The AnalyticsJob that owns the worker Job (garbage collection, events)."""

    name: str
    namespace: str
    uid: str


def worker_job_name(owner_name: str) -> str:
    """``<name>-workers``, shortened with a hash suffix when it would be too long."""
    name = f"{owner_name}-workers"
    if len(name) <= MAX_JOB_NAME:
        return name
    digest = hashlib.sha256(owner_name.encode()).hexdigest()[:8]
    return f"{owner_name[: MAX_JOB_NAME - 9].rstrip('-')}-{digest}"


def worker_secret_name(owner_name: str) -> str:
    """``<workers Job>-credentials``: the Secret with the job's worker token."""
    return f"{worker_job_name(owner_name)}-credentials"


WORKER_TOKEN_KEY = "token"
"""The key of the worker token in :func:`worker_secret_name`'s Secret."""


def _owner_references(owner: Owner) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": API_VERSION,
            "kind": ANALYTICS_JOB_KIND,
            "name": owner.name,
            "uid": owner.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def build_worker_secret(*, owner: Owner, spec: AnalyticsJobSpec, token: str) -> dict[str, Any]:
    """The Secret of the job's worker token (the execution service's credential for this
    job's pods only), owned by the AnalyticsJob so that it goes with it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": worker_secret_name(owner.name),
            "namespace": owner.namespace,
            "labels": worker_labels(owner, spec),
            "ownerReferences": _owner_references(owner),
        },
        "stringData": {WORKER_TOKEN_KEY: token},
    }


def consortium_configmap_name(consortium: str) -> str:
    """The ConfigMap the operator renders a Consortium into."""
    return f"{consortium}-parties"


def worker_labels(owner: Owner, spec: AnalyticsJobSpec) -> dict[str, str]:
    """Labels of the worker Job and its pods; the operator watches pods by them."""
    return {
        **WORKER_LABELS,
        LABEL_ANALYTICS_JOB: owner.name,
        LABEL_CONSORTIUM: spec.consortium,
    }


def build_worker_job(
    *,
    owner: Owner,
    spec: AnalyticsJobSpec,
    placement: Placement,
    template: WorkerTemplate,
) -> dict[str, Any]:
    """The worker Job manifest for ``owner``."""
    labels = worker_labels(owner, spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": worker_job_name(owner.name),
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": _owner_references(owner),
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.partitions,
            "parallelism": spec.partitions,
            "backoffLimit": template.backoff_limit,
            "ttlSecondsAfterFinished": template.ttl_seconds,
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": {"labels": labels},
                "spec": _pod_spec(
                    spec=spec,
                    placement=placement,
                    template=template,
                    secret=worker_secret_name(owner.name),
                ),
            },
        },
    }


def pod_failure_policy() -> dict[str, Any]:
    """Ignore disruptions (preemption never counts), fail fast on permanent errors."""
    return {
        "rules": [
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": WORKER_CONTAINER,
                    "operator": "In",
                    "values": [WORKER_PERMANENT_FAILURE_EXIT_CODE],
                },
            },
        ]
    }


def _pod_spec(
    *, spec: AnalyticsJobSpec, placement: Placement, template: WorkerTemplate, secret: str
) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {
            "name": "consortium",
            "configMap": {"name": consortium_configmap_name(spec.consortium)},
        },
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "consortium", "mountPath": CONSORTIUM_MOUNT, "readOnly": True},
    ]
    if template.partylink_tls_secret:
        volumes.append(
            {
                "name": "partylink-tls",
                "secret": {"secretName": template.partylink_tls_secret, "defaultMode": 0o440},
            }
        )
        mounts.append({"name": "partylink-tls", "mountPath": TLS_MOUNT, "readOnly": True})
    if template.rest_tls_secret:
        volumes.append(
            {
                "name": "rest-ca",
                "secret": {
                    "secretName": template.rest_tls_secret,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "rest-ca", "mountPath": REST_CA_MOUNT, "readOnly": True})

    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": template.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": WORKER_CONTAINER,
                "image": template.image,
                "imagePullPolicy": "IfNotPresent",
                "command": list(template.command),
                "env": _worker_env(spec=spec, placement=placement, template=template)
                + [
                    {  # the job's own credential at the execution service (wins over envFrom)
                        "name": "TALLY_EXECUTION_WORKER_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": secret, "key": WORKER_TOKEN_KEY}},
                    }
                ],
                "envFrom": _env_from(template),
                "resources": _resources(template.resources, spec.resources),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    affinity = node_affinity(placement, template.spot_node_labels)
    if affinity:
        pod["affinity"] = affinity
    spot_tolerations = tolerations(placement, [dict(t) for t in template.spot_tolerations])
    if spot_tolerations:
        pod["tolerations"] = spot_tolerations
    if template.priority_class:
        pod["priorityClassName"] = template.priority_class
    return pod


def _worker_env(
    *, spec: AnalyticsJobSpec, placement: Placement, template: WorkerTemplate
) -> list[dict[str, Any]]:
    def field(path: str) -> dict[str, Any]:
        return {"fieldRef": {"fieldPath": path}}

    env: list[dict[str, Any]] = [
        {"name": "TALLY_JOB_ID", "value": spec.job_id},
        {"name": "TALLY_PARTY_ID", "value": template.party_id},
        {"name": "TALLY_PARTITIONS", "value": str(spec.partitions)},
        {
            "name": "TALLY_PARTITION",
            "valueFrom": field(f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"),
        },
        {"name": "TALLY_EXECUTION_URL", "value": template.execution_url},
        {"name": "TALLY_CONSORTIUM_FILE", "value": f"{CONSORTIUM_MOUNT}/consortium.json"},
        {"name": "TALLY_RESUME", "value": "true"},
        {"name": "TALLY_ZONE", "value": placement.zone or ""},
        {"name": "TALLY_POD_NAME", "valueFrom": field("metadata.name")},
        {"name": "TALLY_NODE_NAME", "valueFrom": field("spec.nodeName")},
        # PartyLink: the worker binds and advertises its pod IP (peers dial it).
        {"name": "TALLY_EXECUTION_WORKER_HOST", "valueFrom": field("status.podIP")},
    ]
    if template.partylink_tls_secret:
        env.append({"name": "TALLY_PARTYLINK_TLS_DIR", "value": TLS_MOUNT})
    return env


def _env_from(template: WorkerTemplate) -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = []
    if template.env_configmap:
        sources.append({"configMapRef": {"name": template.env_configmap}})
    if template.env_secret:
        sources.append({"secretRef": {"name": template.env_secret}})
    return sources


def _resources(defaults: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {key: dict(value) for key, value in defaults.items()}
    for key, value in (override or {}).items():
        merged[key] = {**merged.get(key, {}), **dict(value)}
    return merged
