"""Mutual TLS between services of different parties: named certificates and gRPC credentials.

Every endpoint holds a certificate whose common name and DNS name say who it is
(``party-<i>`` for a party, e.g. ``dealer`` for an independent tuple dealer), signed
by the consortium's CA.  A server requires a client certificate from that CA and
reads the caller's name from it (:func:`peer_name`); a client dials any address but
checks the server's certificate against the name it expects
(``grpc.ssl_target_name_override``), so a DNS or routing mistake cannot hand a
party's material to someone else.

:func:`write_test_pki` makes a throwaway CA and certificates with ``cryptography``
(development and tests only: real deployments get theirs from the consortium's CA
and mount them).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tally.common.settings import ConfigurationError

PARTY_PREFIX = "party-"


def party_name(party: int) -> str:
    """The name a party's certificate carries (common name and DNS SAN)."""
    return f"{PARTY_PREFIX}{party}"


_PARTY_NAME = re.compile(r"party-(0|[1-9][0-9]{0,3})")
"""ASCII digits only, no leading zero: ``party-01`` or ``party-١`` name no party."""


def party_index(name: str) -> int | None:
    """The index a party's certificate name carries (``party-<i>``), else None."""
    match = _PARTY_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def is_party_name(name: str) -> bool:
    """Whether ``name`` is a computational party's certificate name (``party-<i>``)."""
    return party_index(name) is not None


@dataclass(frozen=True)
class PeerTLS:
    """PEM bytes: the consortium CA, this endpoint's certificate chain and its private key."""

    ca: bytes
    certificate: bytes
    key: bytes

    @classmethod
    def load(cls, ca_path: Path, cert_path: Path, key_path: Path, what: str = "TLS") -> PeerTLS:
        """Read the three PEM files; a missing file is a ``ConfigurationError`` naming it."""
        parts = []
        for label, path in (("CA", ca_path), ("certificate", cert_path), ("key", key_path)):
            try:
                parts.append(Path(path).read_bytes())
            except OSError as error:
                raise ConfigurationError(
                    f"cannot read the {what} {label} {path}: {error}"
                ) from None
        return cls(*parts)

    @property
    def name(self) -> str:
        """The common name of this endpoint's own certificate."""
        return certificate_name(self.certificate)

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


def certificate_name(pem: bytes) -> str:
    """The common name of the first certificate in ``pem``."""
    certificate = x509.load_pem_x509_certificate(pem)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigurationError("the certificate has no common name")
    value = names[0].value
    return value.decode() if isinstance(value, bytes) else str(value)


def channel(
    address: str,
    tls: PeerTLS | None,
    expected_name: str,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``address`` whose server must present ``expected_name``; plaintext if no TLS."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    secure_options = [*options, ("grpc.ssl_target_name_override", expected_name)]
    return grpc.secure_channel(address, tls.channel_credentials(), options=secure_options)


def peer_name(context: grpc.ServicerContext) -> str | None:
    """The common name on the TLS client certificate of a call; None without one."""
    names = context.auth_context().get("x509_common_name") or []
    for raw in names:
        return raw.decode() if isinstance(raw, bytes) else str(raw)
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


def issue_certificate(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    loopback: bool = False,
    addresses: Iterable[str] = (),
) -> PeerTLS:
    """A certificate for ``name`` (server and client use) signed by ``ca``; with
    ``loopback``, also valid for ``localhost`` and 127.0.0.1 (local REST listeners), and
    for each IP address of ``addresses``."""
    alternative: list[x509.GeneralName] = [x509.DNSName(name)]
    ips = ["127.0.0.1"] if loopback else []
    if loopback:
        alternative.append(x509.DNSName("localhost"))
    for address in [*ips, *addresses]:
        ip = x509.IPAddress(ipaddress.ip_address(address))
        if ip not in alternative:
            alternative.append(ip)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return PeerTLS(
        ca=ca.public_bytes(serialization.Encoding.PEM),
        certificate=certificate.public_bytes(serialization.Encoding.PEM),
        key=_pem_key(key),
    )


def write_test_pki(
    directory: Path,
    names: Iterable[str],
    loopback: Iterable[str] = (),
    addresses: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, tuple[Path, Path, Path]]:
    """A fresh CA and one certificate per name under ``directory`` (tests and development);
    the ``loopback`` names are also valid for localhost and 127.0.0.1, and a name in
    ``addresses`` for its IP addresses.

    Returns (ca, certificate, key) paths by name.
    """
    local = set(loopback)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca()
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out = {}
    for name in [*names, *sorted(local)]:
        extra = (addresses or {}).get(name, ())
        tls = issue_certificate(ca, ca_key, name, loopback=name in local, addresses=extra)
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(tls.certificate)
        key_path.write_bytes(tls.key)
        key_path.chmod(0o600)
        out[name] = (ca_path, cert_path, key_path)
    return out
