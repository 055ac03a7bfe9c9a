"""Job ids scoped by submitter (DESIGN §7; docs/execution.md).

A client names its job; every party keeps it under :func:`scoped_job_id`, the name
and 12 hex digits of SHA-256 of submitter and name.  Nobody can take another
identity's job id by submitting first, and the result dataset ids derived from it
are the submitter's alone.
"""

from __future__ import annotations

import hashlib

SCOPE_DIGITS = 12
JOB_NAME_MAX = 63 - SCOPE_DIGITS - 1
"""Longest job name a client may give: its scoped id must still be a DNS label."""


def scoped_job_id(submitter: str, name: str) -> str:
    """The id job ``name`` of ``submitter`` has at every party (module docstring)."""
    digest = hashlib.sha256(f"tally-job\0{submitter}\0{name}".encode()).hexdigest()
    return f"{name}-{digest[:SCOPE_DIGITS]}"


def job_name(job_id: str) -> str:
    """The name a scoped job id was made from."""
    return job_id[: -SCOPE_DIGITS - 1]


def scoped_for(job_id: str, submitter: str) -> bool:
    """Whether ``job_id`` is already the scoped id of one of ``submitter``'s jobs."""
    return len(job_id) > SCOPE_DIGITS + 1 and scoped_job_id(submitter, job_name(job_id)) == job_id
