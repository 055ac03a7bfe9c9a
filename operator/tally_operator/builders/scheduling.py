"""Placement of worker pods: zone affinity, spot tolerations and spot preferences.

All workers of a job run in one availability zone (DESIGN §8): a *required* node
affinity on ``topology.kubernetes.io/zone``. When a job allows spot nodes, workers
tolerate the providers' spot taints and *prefer* spot nodes (one weighted term per
provider label, so a node carrying any of them scores). When it does not, the
required term also excludes nodes carrying a spot label, because some providers
(EKS) do not taint spot nodes and a toleration-less pod could still land there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tally_operator.resources import ZONE_LABEL

SPOT_PREFERENCE_WEIGHT = 100


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a job's workers go: a zone (or none) and whether spot nodes are allowed."""

    zone: str | None
    spot: bool


def node_affinity(
    placement: Placement, spot_node_labels: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """The pod ``affinity`` for ``placement``; empty when nothing constrains the pod."""
    expressions: list[dict[str, Any]] = []
    if placement.zone is not None:
        expressions.append({"key": ZONE_LABEL, "operator": "In", "values": [placement.zone]})
    if not placement.spot:
        expressions.extend(
            {"key": key, "operator": "NotIn", "values": [value]} for key, value in spot_node_labels
        )
    affinity: dict[str, Any] = {}
    if expressions:
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": expressions}]
        }
    if placement.spot and spot_node_labels:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {
                "weight": SPOT_PREFERENCE_WEIGHT,
                "preference": {
                    "matchExpressions": [{"key": key, "operator": "In", "values": [value]}]
                },
            }
            for key, value in spot_node_labels
        ]
    return {"nodeAffinity": affinity} if affinity else {}


def tolerations(
    placement: Placement, spot_tolerations: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Spot tolerations for a job that allows spot nodes, none otherwise."""
    return [dict(t) for t in spot_tolerations] if placement.spot else []
