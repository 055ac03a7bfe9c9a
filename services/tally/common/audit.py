"""The audit trail: one structured JSON event per decision about data, never the data.

Each event is one line on the ``tally.audit`` logger (stderr of the service, and the
``audit_file`` when configured): what happened (``event``: ``dataset.read``,
``dataset.use``, ``grant.put``, ``policy.put``, ``job.submit``, ``job.result``,
``refused``, ...), who asked (``identity``), about what (dataset, job, grantee,
program ids), the ``decision`` (``allowed`` or ``refused``) and, for a refusal, its
status and error code.  Never in an event: a value, a share, a token, a detail text
that could quote input, a host.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("tally.audit")

current_identity: contextvars.ContextVar[str] = contextvars.ContextVar(
    "tally_audit_identity", default="-"
)
"""The identity of the request being served (set when it is authenticated)."""

_Field = str | int | float | bool | None


def configure(audit_file: Path | None = None) -> None:
    """Send audit events to stderr, and to ``audit_file`` (appended) when given."""
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.StreamHandler(sys.stderr))
    if audit_file is not None and not any(isinstance(h, logging.FileHandler) for h in log.handlers):
        Path(audit_file).parent.mkdir(parents=True, exist_ok=True)
        log.addHandler(logging.FileHandler(audit_file, encoding="utf-8"))


def audit(
    event: str, decision: str = "allowed", identity: str | None = None, **ids: _Field
) -> None:
    """Record one event (``ids``: dataset, job, grantee, program, status, code, ...)."""
    record = {
        "audit": event,
        "at": round(time.time(), 3),
        "identity": identity or current_identity.get(),
        "decision": decision,
        **{k: v for k, v in ids.items() if v is not None},
    }
    log.info(json.dumps(record, sort_keys=True))
