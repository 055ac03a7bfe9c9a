"""Per-party certificates for PartyLink's mutual TLS, and their gRPC credentials.

Every party holds a certificate whose common name and DNS name are ``party-<id>``,
signed by the consortium's CA.  A PartyLink server requires a client certificate
from the same CA and checks that the certificate names the party the frames claim
to come from; a client checks the server's certificate against ``party-<peer>``
whatever address it dialled.

:func:`write_test_pki` makes a throwaway CA and party certificates with
``cryptography`` (development and tests only: real deployments get theirs from
the consortium's CA and mount them, see the settings).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def party_name(party: int) -> str:
    """The name a party's certificate carries (common name and DNS SAN)."""
    return f"party-{party}"


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
        if name.startswith("party-") and name[6:].isdigit():
            return int(name[6:])
    return None


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tally test consortium"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(
    common_name: str = "tally test CA",
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate and its key (tests and development)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def issue_party_certificate(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, party: int
) -> PartyTLS:
    """A certificate for ``party-<party>`` (server and client use) signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = party_name(party)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return PartyTLS(
        ca=ca.public_bytes(serialization.Encoding.PEM),
        certificate=certificate.public_bytes(serialization.Encoding.PEM),
        key=_pem_key(key),
    )


def write_test_pki(directory: Path, parties: int) -> list[tuple[Path, Path, Path]]:
    """A fresh CA and one certificate per party under ``directory``.

    Returns (ca, certificate, key) paths per party.  For tests and development only.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca()
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out = []
    for party in range(parties):
        tls = issue_party_certificate(ca, ca_key, party)
        cert_path = directory / f"{party_name(party)}.pem"
        key_path = directory / f"{party_name(party)}.key"
        cert_path.write_bytes(tls.certificate)
        key_path.write_bytes(tls.key)
        key_path.chmod(0o600)
        out.append((ca_path, cert_path, key_path))
    return out
