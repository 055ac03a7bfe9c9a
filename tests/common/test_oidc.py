"""OIDC/JWT bearer tokens against a real JWKS endpoint, and static tokens reloaded from a file."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tally.common.auth import TokenAuthenticator, TokenSpec, hash_token
from tally.common.errors import ApiError
from tally.common.oidc import IdentitySettings, OidcSettings, make_authenticator

ISSUER = "https://login.bank.example"
AUDIENCE = "tally-secret-store"


@dataclass
class Issuer:
    """A JWKS endpoint on loopback serving the public halves of ``keys``."""

    url: str
    keys: dict[str, Any] = field(default_factory=dict)
    fetches: int = 0

    def add_key(self, kid: str, kind: str = "ec") -> None:
        if kind == "rsa":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            algorithm = (
                jwt.algorithms.ECAlgorithm
                if isinstance(key, ec.EllipticCurvePrivateKey)
                else jwt.algorithms.RSAAlgorithm
            )
            entry = json.loads(algorithm.to_jwk(key.public_key()))
            entry.update(kid=kid, use="sig")
            out.append(entry)
        return {"keys": out}

    def token(self, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        key = self.keys[kid]
        algorithm = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state.fetches += 1
            body = json.dumps(state.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    state.add_key("k1")
    try:
        yield state
    finally:
        server.shutdown()


def authenticator(issuer: Issuer, **settings: Any) -> TokenAuthenticator:
    oidc = OidcSettings(
        issuer=ISSUER, audience=AUDIENCE, jwks_url=issuer.url, min_refetch_s=0, **settings
    )
    static = [TokenSpec(identity="ops", token="ops-static-token-0123456789")]  # type: ignore[arg-type]
    return make_authenticator(static, "development", IdentitySettings(oidc=oidc))


def refused(auth: TokenAuthenticator, token: str) -> str:
    with pytest.raises(ApiError) as caught:
        auth.authenticate(f"Bearer {token}")
    assert caught.value.status_code == 401
    return str(caught.value.detail)


def test_a_valid_jwt_names_its_identity_roles_and_scopes(issuer: Issuer) -> None:
    auth = authenticator(issuer)
    token = issuer.token(roles=["analyst", "made-up"], scope="tuples monitoring")
    principal = auth.authenticate(f"Bearer {token}")
    assert principal.identity == "alice" and not principal.service
    assert principal.roles == {"analyst"} and principal.scopes == {"tuples", "monitoring"}
    assert auth.authenticate(f"Bearer {issuer.token(roles=['service'])}").service
    # the static tokens still work beside the issuer
    assert auth.authenticate("Bearer ops-static-token-0123456789").identity == "ops"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "tally-execution"}, "not meant for this service"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"exp": int(time.time()) - 3600}, "token expired"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"sub": "not an identity!"}, "is not an identity"),
        ({"sub": None}, "lacks the sub claim"),
        ({"exp": None}, "lacks the exp claim"),
    ],
)
def test_claims_are_checked(issuer: Issuer, claims: dict[str, Any], reason: str) -> None:
    assert reason in refused(authenticator(issuer), issuer.token(**claims))


def test_clock_skew_within_the_leeway_is_accepted(issuer: Issuer) -> None:
    skewed = issuer.token(exp=int(time.time()) - 30, iat=int(time.time()) - 400)
    assert authenticator(issuer, leeway_s=60).authenticate(f"Bearer {skewed}").identity == "alice"
    assert "expired" in refused(authenticator(issuer, leeway_s=0), skewed)


def test_forged_and_unsigned_tokens_are_refused(issuer: Issuer) -> None:
    auth = authenticator(issuer)
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 60}
    unsigned = jwt.encode(body, None, algorithm="none", headers={"kid": "k1"})
    assert "algorithm is not accepted" in refused(auth, unsigned)
    hmac_signed = jwt.encode(body, "a-guessable-secret-long-enough-0123", algorithm="HS256")
    assert "algorithm is not accepted" in refused(auth, hmac_signed)
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(body, stranger, algorithm="ES256", headers={"kid": "k1"})
    assert "signature does not verify" in refused(auth, forged)
    tampered = issuer.token()
    head, payload, signature = tampered.split(".")
    other = issuer.token(sub="mallory").split(".")[1]
    assert "signature does not verify" in refused(auth, f"{head}.{other}.{signature}")
    assert payload != other


def test_a_rotated_key_is_fetched_once_and_cached(issuer: Issuer) -> None:
    auth = authenticator(issuer)
    assert auth.authenticate(f"Bearer {issuer.token()}").identity == "alice"
    fetched = issuer.fetches
    for _ in range(5):
        auth.authenticate(f"Bearer {issuer.token()}")
    assert issuer.fetches == fetched  # cached
    issuer.add_key("k2", kind="rsa")  # the issuer rotates to a new key
    assert auth.authenticate(f"Bearer {issuer.token('k2')}").identity == "alice"
    assert issuer.fetches == fetched + 1
    issuer.add_key("k3")
    unpublished = issuer.token("k3")
    del issuer.keys["k3"]  # signed by a key the issuer does not publish
    assert "does not publish" in refused(auth, unpublished)


def test_static_tokens_are_reloaded_from_their_file_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([{"identity": "bob", "sha256": hash_token("old-token-0123456789")}]))
    auth = make_authenticator([], "development", IdentitySettings(tokens_file=path))
    assert auth.authenticate("Bearer old-token-0123456789").identity == "bob"
    rotated = [
        {"identity": "bob", "sha256": hash_token("new-token-0123456789"), "scopes": ["monitoring"]}
    ]
    path.write_text(json.dumps(rotated))
    principal = auth.authenticate("Bearer new-token-0123456789")
    assert principal.identity == "bob" and principal.allows("monitoring")
    assert not principal.allows("tuples")
    with pytest.raises(ApiError):
        auth.authenticate("Bearer old-token-0123456789")  # revoked by the rotation
    path.write_text("not json")  # a broken file keeps the tokens that were loaded
    assert auth.authenticate("Bearer new-token-0123456789").identity == "bob"
