"""Access control against the real server process: basic auth, JWT (secret, JWKS URL), allow-lists, CORS."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from piping_server.ops._auth import hash_password

from ..helpers import unique_path
from .util import JwksServer, Receiver, Sender, basic, request, server_with

pytestmark = pytest.mark.ours

SECRET = "server-test-secret-of-32-bytes-or-more"


def transfer(port: int, path: str, auth: str, data: bytes = b"hello\n") -> bytes:
    """One sender and one receiver with these credentials; the receiver's body."""
    receiver = Receiver(port, path, headers={"Authorization": auth})
    time.sleep(0.2)
    status, _, progress = request(port, "POST", path, headers={"Authorization": auth}, body=data)
    assert status == 200, progress
    receiver.read_to_close(timeout=5)
    receiver.close()
    return receiver.body()[0]


def test_basic_auth(tmp_path: Path) -> None:
    hashed = hash_password("s3cret")
    config = f"[[auth.basic.users]]\nname = 'alice'\npassword_hash = '{hashed}'\n"
    with server_with(config=config, tmp=tmp_path) as (server, _):
        port = server.http_port
        status, headers, body = request(port, "GET", unique_path())
        assert status == 401 and body == b"[ERROR] Authentication required.\n"
        assert headers["www-authenticate"] == ['Basic realm="piping-server", charset="UTF-8"']
        assert headers["access-control-allow-origin"] == ["*"]
        status, _, body = request(
            port, "POST", unique_path(), headers={"Authorization": basic("alice", "wrong")}, body=b"x"
        )
        assert status == 401 and body == b"[ERROR] Wrong user name or password.\n"
        assert transfer(port, unique_path(), basic("alice", "s3cret")) == b"hello\n"
        # pages stay open by default; the preflight stays open and advertises Authorization
        assert request(port, "GET", "/version")[0] == 200
        status, headers, _ = request(port, "OPTIONS", unique_path())
        assert status == 200
        assert headers["access-control-allow-headers"] == ["Content-Type, Content-Disposition, X-Piping, Authorization"]
        assert "s3cret" not in server.log()


def test_basic_auth_from_environment(tmp_path: Path) -> None:
    with server_with("--access-log", tmp=tmp_path, env={"PIPING_BASIC_AUTH_BOB": "env-pass"}) as (server, _):
        assert request(server.http_port, "GET", unique_path())[0] == 401
        assert transfer(server.http_port, unique_path(), basic("bob", "env-pass")) == b"hello\n"
        assert "env-pass" not in server.log()


def test_jwt_expired_and_forged(tmp_path: Path) -> None:
    env = {"PIPING_JWT_SECRET": SECRET}
    config = "[auth.jwt]\naudience = 'piping'\n"
    with server_with("--access-log", config=config, tmp=tmp_path, env=env) as (server, _):
        port = server.http_port
        now = int(time.time())
        expired = jwt.encode({"aud": "piping", "exp": now - 5}, SECRET, algorithm="HS256")
        status, headers, body = request(port, "GET", unique_path(), headers={"Authorization": f"Bearer {expired}"})
        assert status == 401 and body == b"[ERROR] Invalid token: Signature has expired.\n"
        assert headers["www-authenticate"] == ['Bearer realm="piping-server", error="invalid_token"']
        forged = jwt.encode({"aud": "piping", "exp": now + 60}, "not-the-secret-but-long-enough-bytes!!", "HS256")
        status, _, body = request(port, "GET", unique_path(), headers={"Authorization": f"Bearer {forged}"})
        assert status == 401 and body == b"[ERROR] Invalid token: Signature verification failed.\n"
        good = jwt.encode({"aud": "piping", "exp": now + 60}, SECRET, algorithm="HS256")
        assert transfer(port, unique_path(), f"Bearer {good}") == b"hello\n"
        log = server.log()
        assert good not in log and expired not in log and SECRET not in log


def test_jwks_url_and_scopes(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = JwksServer({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})
    try:
        config = f"[auth.jwt]\njwks_url = '{jwks.url}'\nissuer = 'https://idp.test'\n"
        with server_with(config=config, tmp=tmp_path) as (server, _):
            port = server.http_port
            claims = {"iss": "https://idp.test", "exp": int(time.time()) + 60, "piping_paths": ["/scoped/*"]}
            good = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
            assert transfer(port, "/scoped/" + unique_path()[1:], f"Bearer {good}") == b"hello\n"
            status, headers, body = request(port, "GET", unique_path(), headers={"Authorization": f"Bearer {good}"})
            assert status == 403 and body.startswith(b"[ERROR] Your credentials do not allow the path")
            assert headers["www-authenticate"] == ['Bearer realm="piping-server", error="insufficient_scope"']
            unknown = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k2"})
            status, _, body = request(port, "GET", "/scoped/x", headers={"Authorization": f"Bearer {unknown}"})
            assert status == 401 and body == b"[ERROR] Invalid token: unknown key id.\n"
    finally:
        jwks.close()


def test_allow_list(tmp_path: Path) -> None:
    with server_with("--allow-path", "/pub/*", "--allow-path", "re:^/id/[0-9]+$", tmp=tmp_path) as (server, _):
        port = server.http_port
        status, headers, body = request(port, "POST", "/private", body=b"x")
        assert status == 403 and body == b"[ERROR] The path '/private' is not allowed on this server.\n"
        assert "www-authenticate" not in headers
        # matched on the path without the query string, after dot segments are removed
        assert request(port, "GET", "/pub/../private?n=1")[0] == 403
        assert request(port, "GET", "/id/12x")[0] == 403
        sender = Sender(port, "/id/42?n=1")
        assert b"Waiting for 1 receiver" in sender.read_until(b"receiver(s)...\n")
        sender.close()
        assert request(port, "GET", "/help")[0] == 200
        # the preflight is untouched when no credentials are asked for
        status, headers, _ = request(port, "OPTIONS", "/private")
        assert headers["access-control-allow-headers"] == ["Content-Type, Content-Disposition, X-Piping"]


def test_a_question_about_a_path_needs_the_credentials_of_a_transfer(tmp_path: Path) -> None:
    """docs/protocol.md section 12: the question passes the operator's admission like any request on
    the path; refused, it is a head alone (HEAD), and tells nothing of the path."""
    config = "[[auth.basic.users]]\nname = 'alice'\npassword = 's3cret'\n[access]\nallow_paths = ['/ok/*']\n"
    with server_with(config=config, tmp=tmp_path) as (server, _):
        port = server.http_port
        ask = {"Piping-Ask": "state"}
        status, headers, body = request(port, "HEAD", "/ok/p", headers=ask)
        assert status == 401 and body == b"" and "piping-state" not in headers
        good = {**ask, "Authorization": basic("alice", "s3cret")}
        status, headers, body = request(port, "HEAD", "/elsewhere", headers=good)
        assert status == 403 and body == b"" and "piping-state" not in headers
        status, headers, body = request(port, "HEAD", "/ok/p", headers=good)
        assert status == 204 and headers["piping-state"] == ["free"] and body == b""
