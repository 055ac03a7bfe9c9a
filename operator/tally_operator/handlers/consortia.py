"""Reconciling a Consortium into the ConfigMap that workers and services read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from tally_operator.builders.job import consortium_configmap_name
from tally_operator.builders.status import ConditionType as _ConditionType
from tally_operator.builders.status import condition, merge_conditions, now_iso
from tally_operator.consortium import build_consortium_configmap, parse_consortium_spec
from tally_operator.handlers import events
from tally_operator.kube import KubeConflict, KubeNotFound, KubeUnavailable
from tally_operator.runtime import Runtime
from tally_operator.spec import InvalidSpecError


async def reconcile_consortium(
    *,
    body: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    name: str,
    namespace: str,
    uid: str,
    patch: kopf.Patch,
    runtime: Runtime,
) -> None:
    """Validate the parties, write ``<name>-parties``, and record the outcome."""
    now = now_iso()
    conditions = status.get("conditions") or []
    try:
        consortium = parse_consortium_spec(spec)
    except InvalidSpecError as exc:
        message = f"invalid consortium: {exc}"
        patch.status.update(
            {
                "phase": "Invalid",
                "message": message,
                "conditions": merge_conditions(
                    conditions,
                    [condition(_ConditionType.VALID, False, "InvalidSpec", message, now=now)],
                ),
            }
        )
        events.post(body, [events.warning("InvalidSpec", message)])
        raise kopf.PermanentError(message) from exc

    manifest = build_consortium_configmap(
        name=name, namespace=namespace, uid=uid, consortium=consortium
    )
    configmap = manifest["metadata"]["name"]
    try:
        try:
            existing = await runtime.kube.read_config_map(namespace, configmap)
        except KubeNotFound:
            await runtime.kube.create_config_map(namespace, manifest)
        else:
            manifest["metadata"]["resourceVersion"] = existing.metadata.resource_version
            await runtime.kube.replace_config_map(namespace, configmap, manifest)
    except (KubeUnavailable, KubeConflict) as exc:
        raise kopf.TemporaryError(f"cannot write the parties ConfigMap: {exc}", delay=5) from exc

    local = next(p for p in consortium.parties if p.id == consortium.local_party)
    message = (
        f"{len(consortium.parties)} parties, this party is {local.id} (index {local.index}), "
        f"tuples by {consortium.tuple_generator}"
    )
    patch.status.update(
        {
            "phase": "Ready",
            "message": message,
            "parties": len(consortium.parties),
            "localIndex": local.index,
            "configMap": consortium_configmap_name(name),
            "conditions": merge_conditions(
                conditions, [condition(_ConditionType.VALID, True, "SpecValid", message, now=now)]
            ),
        }
    )
    events.post(body, [events.normal("Configured", message)])
