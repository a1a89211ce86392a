"""Bad basic-auth logins against the real process: hashed off the loop, limited per client, counted."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import jwt
import pytest

from piping_server.ops._auth import hash_password

from ..helpers import WAIT_S, unique_path
from .util import Receiver, Sender, basic, metrics, request, server_with

pytestmark = pytest.mark.ours

#: The burst: 50 bad logins a second for 3 seconds, each on its own connection.
BAD_LOGINS, BAD_LOGINS_PER_S = 150, 50.0


def _users() -> str:
    return f"[[auth.basic.users]]\nname = 'alice'\npassword_hash = '{hash_password('s3cret')}'\n"


def test_a_transfer_streams_on_while_bad_logins_are_limited(tmp_path: Path) -> None:
    with server_with(config=_users(), tmp=tmp_path, metrics_port=True) as (server, mport):
        port = server.http_port
        good = {"Authorization": basic("alice", "s3cret")}
        path = unique_path()
        sender, receiver = Sender(port, path, headers=good), Receiver(port, path, headers=good)
        sender.send(b"start;")
        receiver.read_until(b"start;")  # both are in (their credentials checked and remembered)

        statuses: list[int] = []
        bodies: list[bytes] = []

        def guess() -> None:
            for i in range(BAD_LOGINS):
                started = time.monotonic()
                bad = {"Authorization": basic("alice", f"guess {i}")}
                status, _, body = request(port, "POST", unique_path(), headers=bad, body=b"x")
                statuses.append(status)
                bodies.append(body)
                time.sleep(max(0.0, 1 / BAD_LOGINS_PER_S - (time.monotonic() - started)))

        guesser = threading.Thread(target=guess)
        guesser.start()
        # the transfer goes on while the guesses arrive: each chunk reaches the receiver before the next is sent
        sent = [b"start;"]
        for i in range(2000):
            if not guesser.is_alive() and i >= 20:
                break
            chunk = b"chunk %04d;" % i
            sender.send(chunk)
            sent.append(chunk)
            assert chunk in receiver.read_until(chunk)
        sender.end()
        receiver.read_to_close()
        guesser.join(timeout=WAIT_S * 3)
        assert receiver.body() == (b"".join(sent), True)
        sender.close()

        assert len(statuses) == BAD_LOGINS and set(statuses) <= {401, 429}
        # the first ones are checked and refused; past the client's budget, 429 without hashing
        assert statuses[0] == 401 and statuses.count(429) > 0
        limited = bodies[statuses.index(429)]
        assert limited.startswith(b"[ERROR] Too many failed logins from your address: try again in ")
        samples = metrics(mport)
        assert samples['piping_login_failures_total{reason="bad_credentials"}'] == statuses.count(401)
        assert samples['piping_login_failures_total{reason="rate_limited"}'] == statuses.count(429)
        assert samples['piping_rejections_total{reason="rate_limited"}'] == statuses.count(429)
        # a remembered credential still works from the limited address
        assert request(port, "GET", unique_path() + "?n=0", headers=good)[0] == 400


def test_a_hashed_login_over_h2c_holds_the_body_until_it_is_checked(tmp_path: Path) -> None:
    with server_with(config=_users(), tmp=tmp_path) as (server, _):
        url = f"http://127.0.0.1:{server.http_port}{unique_path()}"
        receiver = subprocess.Popen(["curl", "-sS", "-u", "alice:s3cret", url], stdout=subprocess.PIPE)
        data = b"through h2c after the hash\n" * 1000
        sent = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-u", "alice:s3cret", "--data-binary", "@-", url],
            input=data,
            capture_output=True,
            timeout=WAIT_S,
        )
        out, _ = receiver.communicate(timeout=WAIT_S)
        assert sent.returncode == 0 and out == data
        refused = subprocess.run(
            [
                "curl",
                "-sS",
                "--http2-prior-knowledge",
                "-u",
                "alice:nope",
                "--data-binary",
                "@-",
                "-w",
                "%{http_code}",
                url,
            ],
            input=data,
            capture_output=True,
            timeout=WAIT_S,
        )
        assert refused.stdout == b"[ERROR] Wrong user name or password.\n401"


def test_the_failure_budget_is_configurable(tmp_path: Path) -> None:
    config = _users().replace(
        "[[auth.basic.users]]", "[auth.basic]\nmax_failures = 3\nfailure_refill = 60\n\n[[auth.basic.users]]", 1
    )
    with server_with(config=config, tmp=tmp_path) as (server, _):
        port = server.http_port
        answers = [
            request(port, "GET", unique_path(), headers={"Authorization": basic("alice", f"guess {i}")})
            for i in range(5)
        ]
        assert [status for status, _, _ in answers] == [401, 401, 401, 429, 429]
        status, headers, body = answers[-1]
        wait = int(headers["retry-after"][0])
        assert 1 <= wait <= 60  # one failure is regained every 60 s
        assert body == b"[ERROR] Too many failed logins from your address: try again in %d second(s).\n" % wait


def test_a_client_gone_while_its_password_is_checked(tmp_path: Path) -> None:
    with server_with(config=_users(), tmp=tmp_path) as (server, _):
        port = server.http_port
        path = unique_path()
        for password in ("s3cret", "wrong"):  # the first check of each is off the loop: the client leaves meanwhile
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('alice', password)}\r\n"
                    "Content-Length: 100\r\n\r\npart of the body".encode()
                )
        # the path is still free and the server well
        assert request(port, "GET", "/version")[0] == 200
        receiver = Receiver(port, path, headers={"Authorization": basic("alice", "s3cret")})
        status, _, _ = request(port, "POST", path, headers={"Authorization": basic("alice", "s3cret")}, body=b"ok\n")
        assert status == 200
        receiver.read_to_close()
        assert receiver.body() == (b"ok\n", True)
        assert "Traceback" not in server.log()


JWT_SECRET = "login-limits-secret-of-32-bytes-or-more"


def test_bad_tokens_spend_the_same_failure_budget(tmp_path: Path) -> None:
    config = "[auth.basic]\nmax_failures = 3\nfailure_refill = 60\n\n[auth.jwt]\naudience = 'piping'\n"
    env = {"PIPING_JWT_SECRET": JWT_SECRET}
    with server_with(config=config, tmp=tmp_path, env=env, metrics_port=True) as (server, mport):
        port = server.http_port
        now = int(time.time())
        good = jwt.encode({"aud": "piping", "exp": now + 600}, JWT_SECRET, algorithm="HS256")
        # verified once, before the guessing: then remembered, like a password
        assert request(port, "GET", unique_path() + "?n=0", headers={"Authorization": f"Bearer {good}"})[0] == 400
        forged = [
            jwt.encode(
                {"aud": "piping", "exp": now + 600, "i": i}, "not-the-secret-but-long-enough-bytes!!", algorithm="HS256"
            )
            for i in range(5)
        ]
        answers = [
            request(port, "GET", unique_path(), headers={"Authorization": f"Bearer {token}"}) for token in forged
        ]
        assert [status for status, _, _ in answers] == [401, 401, 401, 429, 429]
        status, headers, body = answers[-1]
        wait = int(headers["retry-after"][0])
        assert body == b"[ERROR] Too many failed logins from your address: try again in %d second(s).\n" % wait
        samples = metrics(mport)
        assert samples['piping_login_failures_total{reason="bad_credentials"}'] == 3
        assert samples['piping_login_failures_total{reason="rate_limited"}'] == 2
        assert samples['piping_rejections_total{reason="rate_limited"}'] == 2
        # the token verified before still works from the limited address; a new good one waits its turn
        assert request(port, "GET", unique_path() + "?n=0", headers={"Authorization": f"Bearer {good}"})[0] == 400
        fresh = jwt.encode({"aud": "piping", "exp": now + 601}, JWT_SECRET, algorithm="HS256")
        assert request(port, "GET", unique_path(), headers={"Authorization": f"Bearer {fresh}"})[0] == 429
