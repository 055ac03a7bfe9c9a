"""PartyLink's mutual TLS: per-party certificates (made by :mod:`tally.common.tls`).

Every party holds a certificate whose common name and DNS name are ``party-<id>``,
signed by the consortium's CA.  A PartyLink server requires a client certificate
from the same CA and checks that the certificate names the party the frames claim
to come from; a client checks the server's certificate against ``party-<peer>``
whatever address it dialled.  Certificate generation (development and tests) is
shared with the tuple-service in :mod:`tally.common.tls`.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tally.common import tls as common_tls
from tally.common.tls import PeerTLS, make_ca, party_name

__all__ = ["PartyTLS", "issue_party_certificate", "make_ca", "party_name", "peer_party"]


class PartyTLS(PeerTLS):
    """PEM bytes: the consortium CA, this party's certificate chain and its private key."""

    @classmethod
    def load(
        cls, ca_path: Path, cert_path: Path, key_path: Path, what: str = "PartyLink TLS"
    ) -> PartyTLS:
        """Read the three PEM files; a missing file is a clear configuration error."""
        return cast(PartyTLS, super().load(ca_path, cert_path, key_path, what))


def peer_party(context: grpc.aio.ServicerContext[object, object]) -> int | None:
    """The party id named by the TLS client certificate of a call; None if it names none."""
    names = context.auth_context().get("x509_common_name") or []
    for raw in names:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        index = common_tls.party_index(name)
        if index is not None:
            return index
    return None


def issue_party_certificate(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, party: int
) -> PartyTLS:
    """A certificate for ``party-<party>`` (server and client use) signed by ``ca``."""
    issued = common_tls.issue_certificate(ca, ca_key, party_name(party))
    return PartyTLS(issued.ca, issued.certificate, issued.key)


def write_test_pki(directory: Path, parties: int) -> list[tuple[Path, Path, Path]]:
    """A fresh CA and one certificate per party under ``directory``: (ca, cert, key) per party.

    For tests and development only.
    """
    names = [party_name(party) for party in range(parties)]
    paths = common_tls.write_test_pki(Path(directory), names)
    return [paths[name] for name in names]
