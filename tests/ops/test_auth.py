"""Access control without a server: hashes, path patterns and the Gate (basic, JWT, scopes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from piping_server.ops._auth import Gate, PathRules, hash_password, parse_hash, verify_password
from piping_server.ops._config import load_config
from piping_server.relay._hooks import RequestView

from .util import basic

SECRET = "a-test-secret-of-32-bytes-or-more!!"


def view(path: str = "/p", method: str = "GET", auth: str | None = None) -> RequestView:
    headers = [(b"authorization", auth.encode())] if auth is not None else []
    return RequestView(
        method=method, path=path, query="", headers=headers, client="127.0.0.1", transport="h1", is_tls=False
    )


def gate(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Gate:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return Gate(load_config(path, environ=environ or {}))


def token(claims: dict[str, object], key: Any = SECRET, alg: str = "HS256", **headers: str) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, key, algorithm=alg, headers=headers or None)


@pytest.mark.parametrize("scheme", ["pbkdf2_sha256", "scrypt"])
def test_hash_roundtrip(scheme: str) -> None:
    stored = hash_password("pässword", scheme=scheme)
    assert stored.startswith(scheme + "$")
    assert verify_password("pässword", parse_hash(stored))
    assert not verify_password("password", parse_hash(stored))
    assert hash_password("x", scheme=scheme) != hash_password("x", scheme=scheme)  # salted


@pytest.mark.parametrize(
    "bad",
    [
        "pbkdf2_sha256$10$c2FsdA==$aGFzaA==",
        "pbkdf2_sha256$1000$!!$aGFzaA==",
        "scrypt$3$8$1$c2FsdA==$aGFzaA==",
        "pbkdf2_sha256$1000$c2FsdA==",
        "bcrypt$x",
    ],
)
def test_malformed_hashes(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_hash(bad)


def test_path_rules() -> None:
    rules = PathRules(["/exact", "/pre/*", "re:/r/[0-9]+"])
    assert rules.allows("/exact") and not rules.allows("/exact/x") and not rules.allows("/exac")
    assert rules.allows("/pre/") and rules.allows("/pre/a/b") and not rules.allows("/pre")
    assert rules.allows("/r/12") and not rules.allows("/r/12x") and not rules.allows("/x/r/12")


def test_no_auth_lets_everything_through(tmp_path: Path) -> None:
    g = gate(tmp_path, "")
    assert g.check(view()) is None and not g.enabled


def test_basic_auth(tmp_path: Path) -> None:
    hashed = hash_password("s3cret")
    g = gate(
        tmp_path,
        f"[[auth.basic.users]]\nname = 'alice'\npassword_hash = '{hashed}'\n"
        "[[auth.basic.users]]\nname = 'bob'\npassword = 'plain'\npaths = ['/bob/*']\n",
    )
    missing = g.check(view())
    assert missing is not None and missing.status == 401
    assert (b"www-authenticate", b'Basic realm="piping-server", charset="UTF-8"') in missing.headers
    wrong = g.check(view(auth=basic("alice", "nope")))
    assert wrong is not None and wrong.status == 401 and wrong.message == "[ERROR] Wrong user name or password.\n"
    assert g.check(view(auth=basic("alice", "s3cret"))) is None
    assert g.check(view(auth=basic("alice", "s3cret"))) is None  # from the cache
    assert g.check(view(auth=basic("nobody", "s3cret"))) is not None
    assert g.check(view(auth="Basic !!notbase64")) is not None
    # per-user paths: 403, the credentials are right
    assert g.check(view("/bob/x", auth=basic("bob", "plain"))) is None
    refused = g.check(view("/elsewhere", auth=basic("bob", "plain")))
    assert refused is not None and refused.status == 403


def test_pages_and_preflight_stay_open(tmp_path: Path) -> None:
    g = gate(tmp_path, "[[auth.basic.users]]\nname = 'a'\npassword = 'b'\n[access]\nallow_paths = ['/x']\n")
    assert g.check(view("/help")) is None and g.check(view("/", method="HEAD")) is None
    assert g.check(view("/anything", method="OPTIONS")) is None
    protected = gate(tmp_path, "[[auth.basic.users]]\nname = 'a'\npassword = 'b'\n[access]\nprotect_pages = true\n")
    assert protected.check(view("/help")) is not None
    assert protected.check(view("/help", auth=basic("a", "b"))) is None


def test_allow_list_without_auth(tmp_path: Path) -> None:
    g = gate(tmp_path, "[access]\nallow_paths = ['/ok/*']\n")
    assert g.check(view("/ok/1", method="POST")) is None
    refused = g.check(view("/nope", method="POST"))
    assert refused is not None and refused.status == 403
    assert refused.message == "[ERROR] The path '/nope' is not allowed on this server.\n"


def test_jwt_hs256(tmp_path: Path) -> None:
    g = gate(tmp_path, "[auth.jwt]\nissuer = 'me'\naudience = 'piping'\n", environ={"PIPING_JWT_SECRET": SECRET})
    good = token({"iss": "me", "aud": "piping"})
    assert g.check(view(auth=f"Bearer {good}")) is None
    cases = {
        "expired": token({"iss": "me", "aud": "piping", "exp": int(time.time()) - 10}),
        "forged": token({"iss": "me", "aud": "piping"}, key="another-secret-of-32-bytes-or-more!"),
        "issuer": token({"iss": "them", "aud": "piping"}),
        "audience": token({"iss": "me", "aud": "other"}),
        "no exp": jwt.encode({"iss": "me", "aud": "piping"}, SECRET, algorithm="HS256"),
        "garbage": "not.a.token",
    }
    for name, bad in cases.items():
        refusal = g.check(view(auth=f"Bearer {bad}"))
        assert refusal is not None and refusal.status == 401, name
        assert (b"www-authenticate", b'Bearer realm="piping-server", error="invalid_token"') in refusal.headers
        assert bad not in refusal.message
    expired = g.check(view(auth=f"Bearer {cases['expired']}"))
    assert expired is not None and expired.message == "[ERROR] Invalid token: Signature has expired.\n"


def test_a_remembered_token_still_expires(tmp_path: Path) -> None:
    g = gate(tmp_path, "[auth.jwt]\n", environ={"PIPING_JWT_SECRET": SECRET})
    short = token({"exp": time.time() + 1.0})
    assert g.check(view(auth=f"Bearer {short}")) is None
    assert g.check(view(auth=f"Bearer {short}")) is None  # remembered: no second signature check
    time.sleep(1.2)
    refusal = g.check(view(auth=f"Bearer {short}"))
    assert refusal is not None and refusal.message == "[ERROR] Invalid token: Signature has expired.\n"


def test_jwt_alg_none_and_confusion_refused(tmp_path: Path) -> None:
    g = gate(tmp_path, "", environ={"PIPING_JWT_SECRET": SECRET})
    unsigned = jwt.encode({"exp": int(time.time()) + 60}, None, algorithm="none")  # type: ignore[arg-type]
    assert g.check(view(auth=f"Bearer {unsigned}")) is not None


def test_jwt_scopes(tmp_path: Path) -> None:
    g = gate(tmp_path, "[access]\nallow_paths = ['/team/*']\n", environ={"PIPING_JWT_SECRET": SECRET})
    scoped = token({"piping_paths": ["/team/a/*"]})
    assert g.check(view("/team/a/1", auth=f"Bearer {scoped}")) is None
    refusal = g.check(view("/team/b/1", auth=f"Bearer {scoped}"))
    assert refusal is not None and refusal.status == 403
    assert (b"www-authenticate", b'Bearer realm="piping-server", error="insufficient_scope"') in refusal.headers
    # a space-separated string works too; the allow-list still applies to an unscoped token
    assert g.check(view("/team/x", auth=f"Bearer {token({'piping_paths': '/team/x /team/y'})}")) is None
    unscoped = g.check(view("/elsewhere", auth=f"Bearer {token({})}"))
    assert unscoped is not None and unscoped.status == 403


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_jwt_public_key_file(tmp_path: Path, alg: str) -> None:
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    g = gate(tmp_path, f"[auth.jwt]\npublic_key_file = '{tmp_path / 'pub.pem'}'\n")
    assert g.check(view(auth=f"Bearer {token({}, key=private, alg=alg)}")) is None
    other = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    assert g.check(view(auth=f"Bearer {token({}, key=other, alg=alg)}")) is not None
    # an HS256 token signed with the public key as the secret (algorithm confusion) is refused
    assert g.check(view(auth=f"Bearer {jwt.encode({'exp': int(time.time()) + 60}, 'x' * 32)}")) is not None


def test_both_schemes_challenge(tmp_path: Path) -> None:
    g = gate(tmp_path, "[[auth.basic.users]]\nname = 'a'\npassword = 'b'\n", environ={"PIPING_JWT_SECRET": SECRET})
    refusal = g.check(view())
    assert refusal is not None
    assert [v for k, v in refusal.headers if k == b"www-authenticate"] == [
        b'Basic realm="piping-server", charset="UTF-8"',
        b'Bearer realm="piping-server"',
    ]
    assert g.check(view(auth=basic("a", "b"))) is None
    assert g.check(view(auth=f"Bearer {token({})}")) is None
