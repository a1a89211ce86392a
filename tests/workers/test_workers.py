"""``--workers N``: requests meet on their path's owner worker, whichever worker took the connection.

The protocol scenarios of tests/e2e/test_transfer.py also run against ``--workers 3`` (the
"workers" and "workers-h2" transports); here are the cases they cannot choose: requests of one
kept-alive or pipelined HTTP/1.1 connection, and streams of one HTTP/2 connection, to paths owned
by different workers; a worker killed mid-transfer; a graceful stop; the summed metrics.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from piping_server.server._handover import owner_of
from piping_server.server._workers import parse_workers

from ..helpers import (
    WAIT_S,
    ServerProcess,
    Target,
    free_port,
    raw_connect,
    recv_until,
    start_server,
    unique_path,
    wait_until,
)
from ..http2._client import H2Client

ALL_OK = b"[INFO] All receiver(s) was/were received successfully.\n"

pytestmark = pytest.mark.ours


def owned_by(index: int, workers: int = 3, prefix: str = "w") -> str:
    """A fresh path whose owner is worker ``index`` of ``workers``."""
    for _ in range(10_000):
        path = unique_path(prefix)
        if owner_of(path, workers) == index:
            return path
    raise AssertionError("no path found")


def read_some(proc: subprocess.Popen[bytes], count: int, timeout: float = WAIT_S) -> bytes:
    """At least ``count`` bytes of a process's stdout (fewer only if it ends or time runs out)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        data += chunk
    return data


def worker_pids(server: ServerProcess, workers: int) -> dict[int, int]:
    """The live pid of each worker index, from the supervisor's log (the last start line of each)."""
    pids: dict[int, int] = {}

    def read() -> bool:
        log = server.log()
        # the first starts in one line ("2 worker processes (pids 11, 12)"), then one line per restart
        first = re.search(r"worker processes \(pids ([\d, ]+)\)", log)
        if first is not None:
            pids.update(enumerate(int(pid) for pid in first.group(1).split(", ")))
        for index, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", log):
            pids[int(index)] = int(pid)
        return len(pids) == workers

    assert wait_until(read), server.log()
    return pids


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_owner_is_stable_and_ignores_the_query() -> None:
    assert owner_of("/a/b", 3) == owner_of("/a/b", 3)
    assert {owner_of(f"/p{i}", 3) for i in range(30)} == {0, 1, 2}
    assert parse_workers("auto") >= 1 and parse_workers("4") == 4
    with pytest.raises(ValueError):
        parse_workers("0")


def test_bad_workers_flag_is_a_usage_error() -> None:
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "piping_server", "--workers", "many"], capture_output=True, timeout=WAIT_S
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        "piping-server: error: --workers must be a count of at least 1 or 'auto', not 'many'"
    ]


def test_port_taken_is_one_line(workers_server: ServerProcess) -> None:
    """The supervisor binds the ports before any worker starts: a taken port is one line and exit code 1."""
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "piping_server",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(workers_server.http_port),
            "--workers",
            "2",
        ],
        capture_output=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 1
    port = workers_server.http_port
    assert done.stderr.decode().strip().splitlines() == [
        f"piping-server: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_keep_alive_requests_move_between_workers(workers_server: ServerProcess) -> None:
    """One HTTP/1.1 connection sends to paths of workers 0, 1, 2 and 0 again: each request meets its receiver."""
    target = workers_server.target("h1")
    sock = raw_connect(target)
    try:
        for i, owner in enumerate((0, 1, 2, 0)):
            path = owned_by(owner)
            recv = subprocess.Popen(target.curl(target.url(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            body = b"request %d on one connection\n" % i
            sock.sendall(
                b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
            )
            reply = recv_until(sock, b"0\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 200 "), reply
            assert ALL_OK in reply
            out, _ = recv.communicate(timeout=WAIT_S)
            assert out == body
    finally:
        sock.close()


def _pin(target: Target, sock: socket.socket, owner: int) -> None:
    """Send one small transfer on ``sock`` to a path of ``owner``: the connection then lives in that worker."""
    path = owned_by(owner)
    recv = target.popen_curl(target.url(path))
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\npin" % path.encode())
    assert ALL_OK in recv_until(sock, b"0\r\n\r\n")
    assert recv.communicate(timeout=WAIT_S)[0] == b"pin"


def test_sender_and_receiver_from_different_workers_meet(workers_server: ServerProcess) -> None:
    """Two kept-alive connections living in workers 1 and 2 carry a receiver and a sender for paths of worker
    0 (both move), of worker 0 again (neither moves), then of worker 2 (one moves), in both arrival orders."""
    target = workers_server.target("h1")
    receiving, sending = raw_connect(target), raw_connect(target)
    try:
        _pin(target, receiving, 1)
        _pin(target, sending, 2)
        for round_, (owner, receiver_first) in enumerate(((0, True), (0, False), (2, True))):
            path = owned_by(owner).encode()
            body = b"round %d\n" % round_
            get = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path
            post = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)
            first, second = (receiving, get), (sending, post)
            if not receiver_first:
                first, second = second, first
            first[0].sendall(first[1])
            time.sleep(0.3)  # the first is registered before the second comes
            second[0].sendall(second[1])
            got = recv_until(receiving, body)
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(body), got
            assert ALL_OK in recv_until(sending, b"0\r\n\r\n")
    finally:
        receiving.close()
        sending.close()


def test_moved_upload_keeps_the_bytes_read_with_its_head(workers_server: ServerProcess) -> None:
    """A sender's head and first body bytes in one write, moved to the owner and spliced there: byte-exact.

    The first request pins the connection to worker 0, so the second one (worker 1's path) must move.
    """
    target = workers_server.target("h1")
    sock = raw_connect(target)
    try:
        pinned = owned_by(0)
        recv = subprocess.Popen(target.curl(target.url(pinned)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\npin" % pinned.encode())
        assert ALL_OK in recv_until(sock, b"0\r\n\r\n")
        assert recv.communicate(timeout=WAIT_S)[0] == b"pin"
        path = owned_by(1)
        recv = subprocess.Popen(target.curl(target.url(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)  # the receiver waits, so the transfer starts (and splices) as the upload arrives
        body = os.urandom(4 * 1024 * 1024)
        framed = [b"%x\r\n%s\r\n" % (len(c), c) for c in (body[i : i + 100_000] for i in range(0, len(body), 100_000))]
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % path.encode()
        sock.sendall(head + framed[0])  # one write: the head and the first bytes of the body
        for piece in framed[1:]:
            sock.sendall(piece)
        sock.sendall(b"0\r\n\r\n")
        out, _ = recv.communicate(timeout=WAIT_S)
        assert out == body
        assert ALL_OK in recv_until(sock, ALL_OK)
    finally:
        sock.close()


def test_new_connections_reach_the_owner_however_their_first_line_comes(workers_server: ServerProcess) -> None:
    """A new connection is moved on what its first bytes say, before it is read (the door peeks): a
    request line that comes whole after a pause, and one split across writes (the door sees no whole
    line: the head moves once read), each make a byte-exact transfer on every worker's paths. (A request
    left on the wrong worker would still be relayed to the owner: what fails here is a door that takes
    bytes from the socket, or loses the connection.)"""
    target = workers_server.target("h1")
    for owner in range(3):
        for split in (False, True):
            path = owned_by(owner)
            body = b"to worker %d, split %s\n" % (owner, str(split).encode())
            recv = target.popen_curl(target.url(path))
            request = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
            sock = raw_connect(target)
            try:
                time.sleep(0.1)  # connected, nothing said yet
                if split:
                    sock.sendall(request[:7])  # "POST /w": no whole request line
                    time.sleep(0.2)
                    sock.sendall(request[7:])
                else:
                    sock.sendall(request)
                assert ALL_OK in recv_until(sock, b"0\r\n\r\n")
            finally:
                sock.close()
            assert recv.communicate(timeout=WAIT_S)[0] == body


def test_tls_http1_requests_to_every_worker(workers_server: ServerProcess) -> None:
    """HTTP/1.1 over TLS cannot move: relayed to the owner, with the owner's answers and a 100 Continue."""
    target = workers_server.target("h1-tls")
    for owner in range(3):
        path = owned_by(owner)
        data = os.urandom(500_000)
        recv = target.popen_curl(target.url(path))
        sent = subprocess.run(
            target.curl("-v", "-H", "Expect: 100-continue", "-T", "-", target.url(path)),
            input=data,
            capture_output=True,
            timeout=WAIT_S,
        )
        assert sent.returncode == 0 and sent.stdout.endswith(ALL_OK), sent.stderr[-500:]
        assert b"< HTTP/1.1 100 Continue" in sent.stderr
        assert recv.communicate(timeout=WAIT_S)[0] == data


def test_relayed_requests_are_logged_with_the_clients_transport(tls_files: tuple[str, str, str]) -> None:
    """The owner's access lines say how the client came (h2, h1+tls), not how the request reached the owner."""
    server = start_server("--workers", "2", "--access-log", https=tls_files)
    try:
        for transport, label in (("h1-tls", "h1+tls"), ("h2c", "h2"), ("h2", "h2+tls")):
            target = server.target(transport)
            for owner in range(2):
                path = owned_by(owner, workers=2)
                recv = target.popen_curl(target.url(path))
                sent = subprocess.run(
                    target.curl("-T", "-", target.url(path)), input=b"hello", capture_output=True, timeout=WAIT_S
                )
                assert sent.returncode == 0 and recv.communicate(timeout=WAIT_S)[0] == b"hello"
                line = re.compile(rf'"(?:GET|PUT) {path}" 200 .* (\S+)$', re.M)
                assert wait_until(lambda rx=line: len(rx.findall(server.log())) == 2), server.log()[-2000:]
                assert line.findall(server.log()) == [label, label], (transport, owner)
    finally:
        server.stop()


def test_pipelined_requests_to_different_workers(workers_server: ServerProcess) -> None:
    """Two requests written at once on one connection: the second, queued, is relayed to its owner."""
    target = workers_server.target("h1")
    paths = [owned_by(0), owned_by(1)]
    bodies = [b"first " * 1000, b"second " * 1000]
    receivers = [
        subprocess.Popen(target.curl(target.url(p)), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in paths
    ]
    sock = raw_connect(target)
    try:
        sock.sendall(
            b"".join(
                b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (p.encode(), len(b), b)
                for p, b in zip(paths, bodies, strict=True)
            )
        )
        reply = b""
        deadline = time.monotonic() + WAIT_S
        for _ in range(2):  # one complete chunked response after the other
            reply += recv_until(sock, b"0\r\n\r\n", timeout=max(0.1, deadline - time.monotonic()))
            if reply.count(ALL_OK) == 2:
                break
        assert reply.count(b"HTTP/1.1 200 ") == 2 and reply.count(ALL_OK) == 2, reply
    finally:
        sock.close()
    for recv, body in zip(receivers, bodies, strict=True):
        out, _ = recv.communicate(timeout=WAIT_S)
        assert out == body


@pytest.mark.parametrize("transport", ["h2c", "h2"])
@pytest.mark.parametrize("senders_first", [False, True])
def test_h2_streams_to_every_worker(workers_server: ServerProcess, transport: str, senders_first: bool) -> None:
    """One HTTP/2 connection carries a sender and a receiver for a path of each worker: all arrive whole."""
    client = H2Client(workers_server.target(transport))
    try:
        paths = [owned_by(i) for i in range(3)]
        payloads = [os.urandom(300_000) for _ in paths]
        if senders_first:
            senders = [client.request("POST", p, end=False) for p in paths]
            receivers = [client.request("GET", p) for p in paths]
        else:
            receivers = [client.request("GET", p) for p in paths]
            senders = [client.request("POST", p, end=False) for p in paths]
        for stream_id, data in zip(senders, payloads, strict=True):
            client.send(stream_id, data, end=True)
        assert client.pump_until(lambda: all(client.streams[s].ended for s in receivers + senders))
        for stream_id, data in zip(receivers, payloads, strict=True):
            assert client.streams[stream_id].status == 200
            assert bytes(client.streams[stream_id].data) == data
        for stream_id in senders:
            assert bytes(client.streams[stream_id].data).endswith(ALL_OK)
    finally:
        client.close()


def test_h2_relay_keeps_backpressure_and_carries_a_reset(workers_server: ServerProcess) -> None:
    """Receiver streams that give no window back stall their senders (bounded bytes in flight, whichever
    worker relays them); resetting those streams reaches the senders on the owners as aborted receivers."""
    import threading

    client = H2Client(workers_server.target("h2c"), auto_ack=False)
    limit = 64 * 1024 * 1024
    frame = b"%x\r\n%s\r\n" % (256 * 1024, os.urandom(256 * 1024))
    paths = [owned_by(i) for i in range(3)]
    pushed = [0, 0, 0]
    stalled = [False, False, False]
    sockets = [raw_connect(workers_server.target("h1")) for _ in paths]

    def push(i: int) -> None:
        sock = sockets[i]
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % paths[i].encode())
        sock.settimeout(3.0)
        while pushed[i] < limit:
            try:
                sock.sendall(frame)
            except TimeoutError:
                stalled[i] = True  # nothing taken for 3 s: held back
                return
            pushed[i] += len(frame)

    try:
        receivers = [client.request("GET", p) for p in paths]
        threads = [threading.Thread(target=push, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        # read the frames as they come, but give no window back
        client.pump_until(lambda: not any(t.is_alive() for t in threads), timeout=60)
        for thread in threads:
            thread.join(timeout=WAIT_S)
        assert all(stalled), pushed
        assert max(pushed) < 48 * 1024 * 1024, pushed
        assert all(len(client.streams[s].data) <= 65_535 for s in receivers)  # the initial window, no more
        for stream_id in receivers:
            client.reset(stream_id)
        for sock in sockets:
            assert b"[INFO] All receiver(s) was/were aborted halfway." in recv_until(sock, b"aborted halfway")
    finally:
        client.close()
        for sock in sockets:
            sock.close()


def test_h2_refusal_comes_back_from_the_owner(workers_server: ServerProcess) -> None:
    """A refusal decided by the owner (a second sender) reaches an HTTP/2 client whole, with its status."""
    client = H2Client(workers_server.target("h2c"))
    try:
        results = []
        for owner in range(3):
            path = owned_by(owner)
            first = client.request("POST", path, end=False)
            assert client.pump_until(lambda first=first: client.streams[first].status == 200), (owner, "first")
            second = client.request("POST", path, headers=[(b"content-length", b"1")], end=False)
            client.send(second, b"x", end=True)
            assert client.pump_until(lambda second=second: client.streams[second].ended), (
                owner,
                client.streams[second],
                client.closed,
            )
            results.append((client.streams[second].status, bytes(client.streams[second].data)))
            client.reset(first)
        for (status, body), owner in zip(results, range(3), strict=True):
            assert status == 400, owner
            assert body.startswith(b"[ERROR] Another sender has been connected on '/w-"), body
    finally:
        client.close()


def test_killed_worker_fails_only_its_transfers_and_comes_back(tmp_path: Path) -> None:
    """SIGKILL the owner of one running transfer: it is cut, the other finishes byte-exact, the worker returns."""
    metrics_port = free_port()
    server = start_server("--workers", "2", "--metrics-port", str(metrics_port), log_dir=tmp_path)
    try:
        target = server.target("h1")
        pids = worker_pids(server, 2)
        doomed, survivor = owned_by(0, 2), owned_by(1, 2)
        for path in (doomed, survivor):  # one transfer each first: every channel between the workers is open
            recv = target.popen_curl(target.url(path))
            assert target.run_curl("-T", "-", target.url(path), input=b"warm\n").endswith(ALL_OK)
            assert recv.communicate(timeout=WAIT_S)[0] == b"warm\n"
        fds_before, rss_before = open_fds(pids[1]), _rss_kib(pids[1])
        receivers = {p: target.popen_curl(target.url(p)) for p in (doomed, survivor)}
        senders = {p: target.popen_curl("-T", "-", target.url(p), stdin=subprocess.PIPE) for p in (doomed, survivor)}
        first = os.urandom(256 * 1024)
        for send in senders.values():
            assert send.stdin is not None
            send.stdin.write(first)
            send.stdin.flush()
        got = {p: read_some(r, len(first)) for p, r in receivers.items()}
        assert got[doomed] == first and got[survivor] == first  # both are mid-transfer
        # and an HTTP/2 receiver of another of worker 0's paths (relayed to it, or on a connection it holds)
        h2 = H2Client(server.target("h2c"))
        doomed_h2 = owned_by(0, 2)
        stream = h2.request("GET", doomed_h2)
        h2_sender = target.popen_curl("-T", "-", target.url(doomed_h2), stdin=subprocess.PIPE)
        assert h2_sender.stdin is not None
        h2_sender.stdin.write(first)
        h2_sender.stdin.flush()
        assert h2.pump_until(lambda: len(h2.streams[stream].data) == len(first))

        os.kill(pids[0], signal.SIGKILL)
        # the h2 stream is reset (relayed) or its connection closed (held by the killed worker): cut either way
        h2.pump_until(lambda: h2.streams[stream].reset is not None or h2.closed)
        assert not h2.streams[stream].ended and (h2.streams[stream].reset is not None or h2.closed)
        h2.close()
        with contextlib.suppress(BrokenPipeError):
            h2_sender.stdin.close()
        h2_sender.wait(timeout=WAIT_S)
        rest = os.urandom(512 * 1024)
        send = senders[survivor]
        assert send.stdin is not None
        send.stdin.write(rest)
        send.stdin.close()
        out, _ = receivers[survivor].communicate(timeout=WAIT_S)
        assert got[survivor] + out == first + rest
        assert send.wait(timeout=WAIT_S) == 0
        # the killed worker's receiver sees a cut stream, never a complete one
        assert receivers[doomed].wait(timeout=WAIT_S) != 0
        doomed_send = senders[doomed]
        with_stdin = doomed_send.stdin
        assert with_stdin is not None
        with contextlib.suppress(BrokenPipeError):
            with_stdin.close()
        doomed_send.wait(timeout=WAIT_S)

        assert wait_until(lambda: len(re.findall(r"worker 0 started", server.log())) == 1)  # the restart
        assert f"worker 0 (pid {pids[0]}) was killed by SIGKILL; restarting it" in server.log()
        assert wait_until(lambda: _get(metrics_port, "/healthz") == (200, b"ok\n"))
        # the restarted worker serves its paths again
        recv = target.popen_curl(target.url(doomed))
        sent = target.run_curl("-T", "-", target.url(doomed), input=b"again\n")
        assert sent.endswith(ALL_OK)
        assert recv.communicate(timeout=WAIT_S)[0] == b"again\n"
        # the survivor holds no more descriptors or memory than before (slack for a lazily made channel)
        assert wait_until(lambda: open_fds(pids[1]) <= fds_before + 2), (open_fds(pids[1]), fds_before)
        assert _rss_kib(pids[1]) < rss_before + 16 * 1024
        # figures summed over both workers: the survivor's two transfers and the restarted worker's one
        status, text = _get(metrics_port, "/metrics")
        assert status == 200
        assert b"piping_workers_up 2.0" in text
        assert re.search(rb"^piping_transfers_finished_total 3\.0$", text, re.M), text.decode()
    finally:
        server.stop()


def test_signals_reach_every_worker(tmp_path: Path) -> None:
    """SIGHUP to the supervisor reaches every worker; so does SIGTERM: running transfers complete, all exit 0."""
    server = start_server("--workers", "2", "--shutdown-grace", "20", log_dir=tmp_path)
    target = server.target("h1")
    paths = [owned_by(0, 2), owned_by(1, 2)]
    try:
        receivers = [target.popen_curl(target.url(p)) for p in paths]
        senders = [target.popen_curl("-T", "-", target.url(p), stdin=subprocess.PIPE) for p in paths]
        for send in senders:
            assert send.stdin is not None
            send.stdin.write(b"before the signal\n")
            send.stdin.flush()
        for recv in receivers:
            assert read_some(recv, 18) == b"before the signal\n"
        server.proc.send_signal(signal.SIGHUP)  # both workers are serving: each says it has no config to reload
        assert wait_until(lambda: server.log().count("config reload (SIGHUP) ignored") == 2), server.log()
        server.proc.send_signal(signal.SIGTERM)
        for send in senders:
            assert send.stdin is not None
            send.stdin.write(b"after it\n")
            send.stdin.close()
        for recv in receivers:
            assert recv.communicate(timeout=WAIT_S)[0] == b"after it\n"
        for send in senders:
            assert send.wait(timeout=WAIT_S) == 0
        assert server.proc.wait(timeout=WAIT_S) == 0
        assert "all workers stopped" in server.log()
    finally:
        server.stop()


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")
