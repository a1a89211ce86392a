"""The command runner (cli/_runner.py): an exception nobody handled is a bug and says so; leftovers at exit stay quiet.

Each case runs a small command through ``run`` in its own process, as ``piping`` does.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import env, run_piping

#: A command that would go on for a while: a bug must end it, not wait for it.
_PRELUDE = """
import asyncio, gc
from piping_server.cli._runner import run

async def go_on():
    await asyncio.sleep(3)
    print("finished", flush=True)
"""

_CALLBACK_BUG = (
    _PRELUDE
    + """
async def main():
    asyncio.get_running_loop().call_soon(lambda: 1 / 0)
    await go_on()

run(main())
"""
)

_LOST_TASK_ERROR = (
    _PRELUDE
    + """
async def main():
    async def broken():
        raise RuntimeError("a result nobody awaits")
    task = asyncio.create_task(broken())
    await asyncio.sleep(0.1)
    del task
    gc.collect()  # "Task exception was never retrieved"
    await go_on()

run(main())
"""
)

_RAISES_WHEN_CUT_AT_EXIT = (
    _PRELUDE
    + """
async def main():
    async def cleanup_that_fails():
        try:
            await asyncio.sleep(30)
        finally:
            raise RuntimeError("cut short at exit")
    asyncio.create_task(cleanup_that_fails())
    await asyncio.sleep(0.1)
    print("done", flush=True)

run(main())
"""
)

_COMMAND_BUG = (
    _PRELUDE
    + """
async def main():
    await asyncio.sleep(0.05)
    raise ValueError("the command's own bug")

run(main())
"""
)

_BUG_LINE = b"piping: error: unexpected error, a bug: "


def _run(script: str, *, debug: bool = False) -> subprocess.CompletedProcess[bytes]:
    environment = env()
    environment.pop("PIPING_DEBUG", None)
    if debug:
        environment["PIPING_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, timeout=30)


def test_callback_exception_while_running_fails_the_command_in_one_line() -> None:
    done = _run(_CALLBACK_BUG)
    assert done.returncode == 70, done
    assert done.stdout == b""  # stopped at once, not finished
    hint = b" (run with --debug or PIPING_DEBUG=1 for its traceback)\n"
    assert done.stderr == _BUG_LINE + b"ZeroDivisionError: division by zero" + hint


def test_callback_exception_under_debug_shows_its_traceback_once() -> None:
    done = _run(_CALLBACK_BUG, debug=True)
    assert done.returncode == 70, done
    err = done.stderr.decode()
    assert err.count("Traceback (most recent call last)") == 1, err
    assert "ZeroDivisionError: division by zero" in err
    assert err.endswith("piping: error: unexpected error, a bug: ZeroDivisionError: division by zero\n"), err


def test_task_error_never_retrieved_while_running_fails_the_command() -> None:
    done = _run(_LOST_TASK_ERROR)
    assert done.returncode == 70, done
    assert done.stderr.startswith(_BUG_LINE + b"RuntimeError: a result nobody awaits"), done.stderr
    assert b"Traceback" not in done.stderr


def test_the_commands_own_unexpected_exception_is_one_line() -> None:
    done = _run(_COMMAND_BUG)
    assert done.returncode == 70, done
    assert done.stderr.startswith(_BUG_LINE + b"ValueError: the command's own bug (run with --debug"), done.stderr
    assert done.stderr.count(b"\n") == 1
    debug = _run(_COMMAND_BUG, debug=True)
    assert debug.returncode == 70 and debug.stderr.count(b"Traceback (most recent call last)") == 1, debug.stderr


def test_tasks_cut_short_at_exit_stay_quiet() -> None:
    for debug in (False, True):
        done = _run(_RAISES_WHEN_CUT_AT_EXIT, debug=debug)
        assert (done.returncode, done.stdout, done.stderr) == (0, b"done\n", b"")


def test_debug_flag_leaves_expected_errors_one_line() -> None:
    # port 9 (discard) is closed on loopback: an expected failure, no traceback even under --debug
    r = run_piping("--debug", "get", "http://127.0.0.1:9/x", timeout=30)
    assert r.returncode == 3, r
    assert r.stderr.startswith(b"piping: error: ") and r.stderr.count(b"\n") == 1, r.stderr
