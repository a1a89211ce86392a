"""How tunnels end: Ctrl-C on either host, a client host that comes and goes, a service that is not there.

Each end is the real ``piping`` process; the signals are real signals. "No traceback, ever" is
checked on every stderr these tests read.
"""

from __future__ import annotations

import signal
import socket
import subprocess

from test_tunnel import _recv_exactly, echo_port, stop, wait_listening

from conftest import free_port, start_piping

__all__ = ["echo_port"]  # a fixture, imported to be used here

# Exit codes of docs/client.md: Ctrl-C is 130, as a shell reports a process ended by SIGINT.
INTERRUPTED = 130


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stderr is not None
    return proc.stderr.read().decode("utf-8", "replace")


def _interrupt(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    code = proc.wait(20)
    return code, _stderr(proc)


def _held_connection(port: int, word: bytes) -> socket.socket:
    """A connection through the tunnel that has carried one echo and stays open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(word)
    assert _recv_exactly(s, len(word)) == word
    return s


def test_multiplex_server_serves_one_client_session_after_another_and_ctrl_c_is_clean(
    server: str, path: str, echo_port: int
) -> None:
    lport = free_port()
    srv = start_piping("tunnel", "server", "-m", "-s", server, "-p", str(echo_port), path)
    clients: list[subprocess.Popen[bytes]] = []
    try:
        for session in range(2):
            cli = start_piping("tunnel", "client", "-m", "-s", server, "-p", str(lport), path)
            clients.append(cli)
            wait_listening(cli)
            with _held_connection(lport, f"session {session}".encode()):
                code, err = _interrupt(cli)  # Ctrl-C on the client host, a connection open
            assert "Traceback" not in err and "Event loop" not in err, err
            assert code == INTERRUPTED, err
            assert srv.poll() is None, "the server host must keep serving after its client host left"

        # Ctrl-C on the server host, a connection open: 130 there, one error line on the client host.
        cli = start_piping("tunnel", "client", "-m", "-s", server, "-p", str(lport), path)
        clients.append(cli)
        wait_listening(cli)
        with _held_connection(lport, b"last"):
            code, err = _interrupt(srv)
            assert "Traceback" not in err and "Event loop" not in err, err
            assert code == INTERRUPTED, err
            cli_code = cli.wait(20)
        cli_err = _stderr(cli)
        assert "Traceback" not in cli_err, cli_err
        assert cli_code not in (0, INTERRUPTED)
        assert cli_err.rstrip("\n").splitlines()[-1].startswith("piping: error: "), cli_err
    finally:
        stop(srv, *clients)


def test_plain_tunnel_ctrl_c_with_a_connection_open(server: str, path: str, echo_port: int) -> None:
    lport = free_port()
    srv = start_piping("tunnel", "server", "-q", "-s", server, "-p", str(echo_port), path)
    cli = start_piping("tunnel", "client", "-s", server, "-p", str(lport), path)
    try:
        wait_listening(cli)
        with _held_connection(lport, b"plain"):
            code, err = _interrupt(cli)
        assert "Traceback" not in err, err
        assert code == INTERRUPTED, err
        srv_code = srv.wait(20)
        srv_err = _stderr(srv)
        assert "Traceback" not in srv_err, srv_err
        assert srv_code != 0
        assert "the tunnel client host went away" in srv_err, srv_err
    finally:
        stop(srv, cli)


def test_plain_tunnel_to_a_service_that_is_not_there(server: str, path: str) -> None:
    lport = free_port()
    closed_port = free_port()  # nothing listens there
    srv = start_piping("tunnel", "server", "-q", "-s", server, "--host", "127.0.0.1", "-p", str(closed_port), path)
    cli = start_piping("tunnel", "client", "-s", server, "-p", str(lport), path)
    try:
        wait_listening(cli)
        with socket.create_connection(("127.0.0.1", lport), timeout=30) as s:
            s.sendall(b"hello?")
            # The client host ends the connection instead of leaving it hanging.
            assert _recv_exactly(s, 1) == b""
        cli_code = cli.wait(30)
        srv_code = srv.wait(30)
        cli_err, srv_err = _stderr(cli), _stderr(srv)
        for err in (cli_err, srv_err):
            assert "Traceback" not in err and "Connect call failed" not in err, err
        want = f"cannot connect to 127.0.0.1:{closed_port}: connection refused"
        assert srv_err == f"piping: error: {want}\n"
        assert srv_code == 1
        # The server host already waits on PATH2 (see run_tunnel_server): it cuts it, and the client host
        # says that it went away.
        assert cli_err.splitlines()[-1] == "piping: error: the tunnel server host went away", cli_err
        assert cli_code == 5  # transfer interrupted (docs/client.md)
    finally:
        stop(srv, cli)


def test_multiplex_tunnel_to_a_service_that_is_not_there(server: str, path: str) -> None:
    """Each connection is closed at once with the reason logged on both hosts; both keep running."""
    lport = free_port()
    closed_port = free_port()
    srv = start_piping("tunnel", "server", "-m", "-s", server, "--host", "127.0.0.1", "-p", str(closed_port), path)
    cli = start_piping("tunnel", "client", "-m", "-s", server, "-p", str(lport), path)
    try:
        wait_listening(cli)
        with socket.create_connection(("127.0.0.1", lport), timeout=30) as s:
            s.sendall(b"hello?")
            assert _recv_exactly(s, 1) == b""
        assert srv.poll() is None and cli.poll() is None
        for proc in (cli, srv):  # the client host first: the server host outlives it
            proc.send_signal(signal.SIGINT)
            assert proc.wait(20) == INTERRUPTED
        reason = f"cannot connect to 127.0.0.1:{closed_port}: connection refused"
        srv_err, cli_err = _stderr(srv), _stderr(cli)
        assert f"[INFO] Stream 1: {reason}\n" in srv_err, srv_err
        assert f"[INFO] Stream 1: the server host closed it: {reason}\n" in cli_err, cli_err
        assert "Traceback" not in srv_err + cli_err
    finally:
        stop(srv, cli)
