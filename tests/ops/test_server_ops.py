"""Metrics, logs, config reloads and graceful shutdown against the real server process."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ..helpers import WAIT_S, unique_path, wait_until
from .util import Receiver, Sender, basic, finish_transfer, metrics, request, running_transfer, server_with, wait_log

pytestmark = pytest.mark.ours


def test_metrics_after_a_known_sequence(tmp_path: Path) -> None:
    with server_with("--allow-path", "/m/*", tmp=tmp_path, metrics_port=True) as (server, mport):
        port = server.http_port
        # 1. a finished transfer of 1000 bytes
        sender, receiver = Sender(port, "/m/one"), Receiver(port, "/m/one")
        sender.send(b"a" * 1000)
        sender.end()
        receiver.read_to_close()
        assert receiver.body() == (b"a" * 1000, True)
        sender.close()
        # 2. an aborted one: the sender breaks after 500 bytes
        sender, receiver = Sender(port, "/m/two"), Receiver(port, "/m/two")
        sender.send(b"b" * 500)
        receiver.read_until(b"b" * 500)
        sender.close()
        receiver.read_to_close()
        # 3. two refusals: a path outside the allow-list, and a bad n
        assert request(port, "GET", "/elsewhere")[0] == 403
        assert request(port, "GET", "/m/three?n=0")[0] == 400
        # 4. a request the HTTP parser refuses (no route, no exchange: still counted)
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as garbage:
            garbage.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert garbage.recv(100).startswith(b"HTTP/1.1 400 ")
        # 5. a receiver left waiting
        waiting = Receiver(port, "/m/four")
        expected = {
            "piping_transfers_finished_total": 1.0,
            "piping_transfers_aborted_total": 1.0,
            "piping_relayed_bytes_total": 1500.0,
            "piping_transfer_duration_seconds_count": 2.0,
            'piping_rejections_total{reason="forbidden"}': 1.0,
            'piping_rejections_total{reason="protocol"}': 1.0,
            'piping_rejections_total{reason="malformed"}': 1.0,
            'piping_requests_total{role="malformed"}': 1.0,
            "piping_waiting_receivers": 1.0,
            "piping_waiting_senders": 0.0,
            "piping_active_transfers": 0.0,
        }
        samples: dict[str, float] = {}

        def settled() -> bool:
            samples.update(metrics(mport))
            return all(samples.get(k) == v for k, v in expected.items())

        assert wait_until(settled, timeout=10), {k: samples.get(k) for k in expected}
        assert samples['piping_requests_total{role="sender"}'] == 2.0
        waiting.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/healthz", timeout=WAIT_S) as response:
            assert response.status == 200 and response.read() == b"ok\n"
        # the protocol's port reserves no metrics path
        assert request(port, "GET", "/metrics")[0] == 403  # outside the allow-list, like any path


def test_json_access_log_has_no_secret(tmp_path: Path) -> None:
    args = ("--access-log", "--log-format", "json")
    with server_with(*args, tmp=tmp_path, env={"PIPING_BASIC_AUTH_EVE": "hunter2"}) as (server, _):
        port = server.http_port
        path = unique_path()
        assert request(port, "GET", path + "?token=abc", headers={"Authorization": basic("eve", "nope")})[0] == 401
        sender = Sender(port, path, headers={"Authorization": basic("eve", "hunter2")})
        receiver = Receiver(port, path, headers={"Authorization": basic("eve", "hunter2")})
        sender.send(b"body-bytes-not-logged")
        sender.end()
        receiver.read_to_close()
        sender.read_until(b"successfully.\n")
        sender.close()
        assert wait_log(server, '"role":"sender"')
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        access = [entry for entry in lines if entry["logger"] == "piping_server.access"]
        assert sorted(e["status"] for e in access if e["path"] == path) == [200, 200, 401]
        receiver_line = next(e for e in access if e["role"] == "receiver")
        assert receiver_line["path"] == path and receiver_line["method"] == "GET" and receiver_line["status"] == 200
        assert receiver_line["bytes_out"] == len(b"body-bytes-not-logged") and receiver_line["client"] == "127.0.0.1"
        assert {"duration_s", "bytes_in", "transport"} <= receiver_line.keys()
        log = server.log()
        for secret in ("hunter2", "abc", "body-bytes-not-logged", basic("eve", "nope")[6:]):
            assert secret not in log


def test_reload_mid_transfer(tmp_path: Path) -> None:
    config = tmp_path / "live.toml"
    config.write_text("[log]\naccess = true\n")
    with server_with("--config", str(config), tmp=tmp_path) as (server, _):
        port = server.http_port
        path = unique_path()
        sender, receiver = Sender(port, path), Receiver(port, path)
        sender.send(b"before ")
        receiver.read_until(b"before ")
        # a new file takes effect for new requests...
        config.write_text("[log]\naccess = true\n[access]\nallow_paths = ['/only/*']\n")
        assert wait_log(server, "config reloaded from")
        assert request(port, "GET", unique_path())[0] == 403
        # ...while the running transfer is not dropped
        sender.send(b"after")
        sender.end()
        receiver.read_to_close()
        assert receiver.body() == (b"before after", True)
        sender.close()


def test_invalid_reload_keeps_the_old_config(tmp_path: Path) -> None:
    config = tmp_path / "live.toml"
    config.write_text("[access]\nallow_paths = ['/ok/*']\n")
    with server_with("--config", str(config), tmp=tmp_path) as (server, _):
        port = server.http_port
        config.write_text("[access]\nallow_paths = ['re:(']\n")
        assert wait_log(server, "rejected")
        line = next(line for line in server.log().splitlines() if "rejected" in line)
        assert "ERROR" in line and "access.allow_paths[0]: bad regular expression" in line
        assert "previous configuration stays in force" in line
        assert request(port, "GET", "/nope")[0] == 403  # the old allow-list still applies
        assert server.proc.poll() is None


def test_sighup_reloads_and_flags_still_override(tmp_path: Path) -> None:
    config = tmp_path / "live.toml"
    config.write_text("[limits]\nmax_n = 5\n")
    with server_with("--config", str(config), "--max-n", "2", tmp=tmp_path) as (server, _):
        port = server.http_port
        assert request(port, "POST", unique_path() + "?n=3", body=b"x")[0] == 400
        # same size and mtime resolution can hide a change from the poller: SIGHUP forces the reload
        config.write_text("[limits]\nmax_n = 9\n[access]\nallow_paths = ['/x/*']\n")
        server.proc.send_signal(signal.SIGHUP)
        assert wait_log(server, "config reloaded from")
        assert request(port, "GET", "/y")[0] == 403  # the new file's allow-list
        status, _, body = request(port, "POST", "/x/a?n=3", body=b"x")
        assert status == 400 and b"at most 2" in body  # the flag still beats the file


def test_sigterm_lets_a_running_transfer_finish(tmp_path: Path) -> None:
    with server_with("--shutdown-grace", "10", tmp=tmp_path, metrics_port=True) as (server, mport):
        sender, receiver = running_transfer(server.http_port)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # no longer accepting, not unhealthy-silent: /healthz says so while the transfer finishes
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/healthz", timeout=WAIT_S)
        assert info.value.code == 503
        assert server.proc.poll() is None
        finish_transfer(sender, receiver)
        assert server.proc.wait(timeout=10) == 0


def test_sigterm_cuts_transfers_after_the_grace_period(tmp_path: Path) -> None:
    with server_with("--shutdown-grace", "0.5", tmp=tmp_path) as (server, _):
        port = server.http_port
        path = unique_path()
        sender, receiver = Sender(port, path), Receiver(port, path)
        waiting = Receiver(port, unique_path())
        sender.send(b"endless")
        receiver.read_until(b"endless")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        receiver.read_to_close(timeout=10)
        assert time.monotonic() - started < 5
        body, complete = receiver.body()
        assert body == b"endless" and not complete  # cut, never a clean end
        assert b"[ERROR] The server is shutting down.\n" in sender.read_until(b"shutting down.\n")
        waiting.read_to_close(timeout=10)
        assert waiting.status() == 503 and waiting.data.endswith(b"[ERROR] The server is shutting down.\n")
        assert server.proc.wait(timeout=10) == 0
        # nothing listens any more
        with pytest.raises(OSError):
            request(port, "GET", "/version", timeout=2)
