"""The audit trail records decisions, and no log of any service holds a secret.

One embedded deployment: a provider uploads and shares a table holding a marker
value, sets a policy, an analyst runs an allowed and a refused job and fetches the
result.  Then every process log of the deployment is read: the audit events are
there (identity, ids, decision), and no token, no share word and no plaintext
input appears anywhere.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tally.client.errors import TallyError
from tally.local_deployment import LocalDeployment
from tally.mpc.ring import encode_int

MARKER = 987_654_321_123


def test_audit_events_are_recorded_and_no_log_holds_a_secret(deployment: LocalDeployment) -> None:
    frame = pd.DataFrame(
        {"region": ["north", "south", "east", "north"] * 5, "views": np.arange(20) * 7}
    )
    frame.loc[3, "views"] = MARKER
    with deployment.connect("provider-a", show_progress=False) as provider:
        dataset = provider.upload(frame, name="audited", share_with=["analyst"])
        provider.set_policy("audited", min_group_size=2)
        shares = [
            store.get_octets(f"/v1/datasets/{dataset.id}/columns/views")
            for store in provider.stores
        ]
    with deployment.connect("analyst", show_progress=False) as analyst:
        table = analyst.table("audited")
        result = (
            table.group_by("region", domain=["north", "south", "east"], min_group_size=2)
            .agg(total=("views", "sum"))
            .to_pandas()
        )
        assert (
            result.set_index("region")["total"].to_dict()
            == frame.groupby("region")["views"].sum().to_dict()
        )
        with pytest.raises(TallyError, match="rule programs"):
            table.sort_by("views").to_pandas()

    text = "\n".join(p.read_text(errors="replace") for p in (deployment.dir / "logs").glob("*.log"))
    events = [json.loads(line) for line in text.splitlines() if line.startswith('{"at"')]
    kinds = {(e["audit"], e["decision"], e["identity"]) for e in events}
    for expected in [
        ("dataset.create", "allowed", "provider-a"),
        ("grant.put", "allowed", "provider-a"),
        ("policy.put", "allowed", "provider-a"),
        ("dataset.read", "allowed", "provider-a"),
        ("dataset.use", "allowed", "analyst"),
        ("job.submit", "allowed", "analyst"),
        ("job.result", "allowed", "analyst"),
        ("job.submit", "refused", "analyst"),
    ]:
        assert expected in kinds, expected
    refused = [e for e in events if e["audit"] == "job.submit" and e["decision"] == "refused"]
    assert all(e["code"] == "policy_violation" for e in refused)

    secrets = json.loads((deployment.dir / "secrets.json").read_text())
    tokens = [t for per_party in secrets["tokens"].values() for t in per_party]
    tokens += secrets["service_tokens"] + secrets["tuples_tokens"]
    assert tokens and not [t for t in tokens if t in text], "a token reached a log"
    words = {int(w) for share in shares for w in share[:20]}
    assert not [w for w in words if str(w) in text or f"{w:x}" in text], "a share reached a log"
    marker = int(encode_int(np.array([MARKER]))[0])
    assert str(MARKER) not in text and str(marker) not in text, "an input value reached a log"
