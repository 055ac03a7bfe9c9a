"""PartyLink's mutual TLS: per-party certificates (made by :mod:`tally.common.tls`).

Every party holds a certificate whose common name and DNS name are ``party-<id>``,
signed by the consortium's CA.  A PartyLink server requires a client certificate
from the same CA and checks that the certificate names the party the frames claim
to come from; a client checks the server's certificate against ``party-<peer>``
whatever address it dialled.  Certificate generation (development and tests) is
shared with the tuple-service in :mod:`tally.common.tls`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tally.common import tls as common_tls
from tally.common.tls import make_ca, party_name

__all__ = ["PartyTLS", "issue_party_certificate", "make_ca", "party_name", "peer_party"]


@dataclass(frozen=True)
class PartyTLS:
    """PEM bytes: the consortium CA, this party's certificate chain and its private key."""

    ca: bytes
    certificate: bytes
    key: bytes

    @classmethod
    def load(cls, ca_path: Path, cert_path: Path, key_path: Path) -> PartyTLS:
        """Read the three PEM files; a missing file is a clear configuration error."""
        parts = []
        for label, path in (("CA", ca_path), ("certificate", cert_path), ("key", key_path)):
            try:
                parts.append(Path(path).read_bytes())
            except OSError as error:
                raise ValueError(f"cannot read the PartyLink TLS {label} {path}: {error}") from None
        return cls(*parts)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server side: present our certificate, require a client certificate from the CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.certificate)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client side: verify the server against the CA, present our certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.certificate
        )


def peer_party(context: grpc.aio.ServicerContext[object, object]) -> int | None:
    """The party id named by the TLS client certificate of a call; None if it names none."""
    names = context.auth_context().get("x509_common_name") or []
    for raw in names:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        if common_tls.is_party_name(name):
            return int(name[len(common_tls.PARTY_PREFIX) :])
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
