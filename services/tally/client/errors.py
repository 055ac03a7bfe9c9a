"""Exceptions of the SDK: each says what went wrong and what to do about it."""

from __future__ import annotations


class TallyError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ConfigError(TallyError):
    """The client configuration (parties.yaml) is missing or malformed."""


class InputError(TallyError, ValueError):
    """Data to upload fails validation before anything leaves this machine."""


class UnknownColumnError(InputError, KeyError):
    """A column named in a call does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ValueOutOfRangeError(InputError):
    """A value cannot be encoded (too large, NaN, not a number)."""


class UnknownDatasetError(TallyError, LookupError):
    """No dataset of that name is visible to this identity."""


class PartyUnreachableError(TallyError, ConnectionError):
    """A party's service did not answer."""


class PartyRequestError(TallyError):
    """A party's service refused a request (a 4xx answer)."""

    def __init__(self, party: int, status: int, code: str, detail: str) -> None:
        super().__init__(f"party {party} refused the request ({status} {code}): {detail}")
        self.party, self.status, self.code, self.detail = party, status, code, detail


class JobFailedError(TallyError):
    """A job failed at one of the parties."""

    def __init__(self, job_id: str, party: int, reason: str) -> None:
        super().__init__(f"job {job_id} failed at party {party}: {reason}")
        self.job_id, self.party, self.reason = job_id, party, reason
