"""VNC mode: the page's noVNC reaches a real X desktop (Xvfb + x11vnc on loopback) through
`piping tunnel server`, over two Piping streams: the desktop shows, and a click lands on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..helpers import free_port, stop_process, wait_for_port, wait_until
from .conftest import screenshot

WIDTH, HEIGHT = 800, 600
# Where the test clicks, in remote-screen pixels: on the desktop app's button.
CLICK_X, CLICK_Y = 600, 450

# A small desktop app: coloured bands (so the screen is not blank) and a button area that writes
# every click it gets, in screen coordinates, to the file given as argv[1].
DESKTOP_APP = f"""
import sys, tkinter
root = tkinter.Tk()
root.overrideredirect(True)
root.geometry("{WIDTH}x{HEIGHT}+0+0")
canvas = tkinter.Canvas(root, width={WIDTH}, height={HEIGHT}, highlightthickness=0, bg="#1f3b73")
canvas.pack()
for i, colour in enumerate(["#e4572e", "#f3a712", "#29335c", "#669bbc", "#a8c686"]):
    canvas.create_rectangle(0, 80 + i * 50, {WIDTH}, 130 + i * 50, fill=colour, width=0)
canvas.create_text({WIDTH} // 2, 40, text="Remote desktop through Piping", fill="white", font=("Helvetica", 24))
canvas.create_rectangle({CLICK_X} - 80, {CLICK_Y} - 30, {CLICK_X} + 80, {CLICK_Y} + 30, fill="#ffffff", width=0)
label = canvas.create_text({CLICK_X}, {CLICK_Y}, text="click me", fill="#000000", font=("Helvetica", 16))
def clicked(event):
    with open(sys.argv[1], "a") as out:
        out.write(f"{{event.x_root}} {{event.y_root}}\\n")
    canvas.itemconfigure(label, text="clicked!")
canvas.bind("<Button-1>", clicked)
root.mainloop()
"""
STARTUP_S = 20


def _free_display() -> int:
    for number in range(90, 190):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number in :90-:189")


@dataclass
class Desktop:
    display: str
    vnc_port: int
    clicks: Path


@contextlib.contextmanager
def _desktop(tmp: Path) -> Iterator[Desktop]:
    """Xvfb (no TCP), a desktop app, and x11vnc on 127.0.0.1; all stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = (tmp / "desktop.log").open("wb")
    try:
        number = _free_display()
        display = f":{number}"
        procs.append(
            subprocess.Popen(
                ["Xvfb", display, "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp"],
                stdout=logs,
                stderr=subprocess.STDOUT,
            )
        )
        if not wait_until(lambda: Path(f"/tmp/.X11-unix/X{number}").exists(), timeout=STARTUP_S):
            raise RuntimeError("Xvfb did not start")
        env = {**os.environ, "DISPLAY": display}
        clicks = tmp / "clicks.txt"
        app = tmp / "desktop_app.py"
        app.write_text(DESKTOP_APP)
        procs.append(
            subprocess.Popen([sys.executable, str(app), str(clicks)], env=env, stdout=logs, stderr=subprocess.STDOUT)
        )
        port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    "x11vnc",
                    "-display",
                    display,
                    "-rfbport",
                    str(port),
                    "-localhost",
                    "-nopw",
                    "-forever",
                    "-shared",
                    "-noxdamage",
                    "-quiet",
                ],
                env=env,
                stdout=logs,
                stderr=subprocess.STDOUT,
            )
        )
        wait_for_port(port, procs[-1], timeout=STARTUP_S)
        yield Desktop(display=display, vnc_port=port, clicks=clicks)
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        logs.close()


def _canvas_colours(page: Any) -> int:
    """How many distinct colours a grid of samples of the viewer's canvas has (0: no canvas yet)."""
    return int(
        page.evaluate("""() => {
        const canvas = document.querySelector('#vnc-screen canvas');
        if (!canvas || canvas.width < 10) return 0;
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const seen = new Set();
        for (let y = 0; y < canvas.height; y += 17) for (let x = 0; x < canvas.width; x += 17) {
            const i = (y * canvas.width + x) * 4;
            seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
        }
        return seen.size;
    }""")
    )


def test_vnc_shows_the_remote_desktop_and_clicks_reach_it(
    http_base: str, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    for tool in ("Xvfb", "x11vnc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install xvfb x11vnc)")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.skip("this Python has no tkinter, which draws the remote test desktop")
    base = f"vnc-{uuid.uuid4().hex[:10]}"
    path1, path2 = f"{base}/c-to-s", f"{base}/s-to-c"
    with _desktop(tmp_path) as desktop:
        # The machine to control runs the client's tunnel (plain mode) against the same server.
        tunnel_log = (tmp_path / "tunnel.log").open("wb")
        tunnel = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "piping_server.cli",
                "tunnel",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(desktop.vnc_port),
                "-s",
                http_base,
                path1,
                path2,
            ],
            stdout=tunnel_log,
            stderr=subprocess.STDOUT,
        )
        try:
            page = new_page(f"{https_base}/#vnc")
            page.fill("#vnc-path1", path1)
            page.fill("#vnc-path2", path2)
            assert f"--port 5900 -s {https_base} {path1} {path2}" in (page.text_content("#vnc-command") or "")
            page.click("#vnc-connect")
            page.wait_for_function("document.body.dataset.vncState === 'connected'")
            page.wait_for_function(
                "(() => { const c = document.querySelector('#vnc-screen canvas'); return c && c.width === "
                + str(WIDTH)
                + "; })()"
            )
            assert wait_until(lambda: _canvas_colours(page) >= 5, timeout=20), "the remote screen stays blank"

            canvas = page.locator("#vnc-screen canvas")
            box = canvas.bounding_box()
            assert box is not None
            # Scaled to fit the page: the same fraction of the canvas as of the remote screen.
            canvas.click(position={"x": box["width"] * CLICK_X / WIDTH, "y": box["height"] * CLICK_Y / HEIGHT})
            assert wait_until(
                lambda: desktop.clicks.exists() and desktop.clicks.read_text().strip() != "", timeout=20
            ), "the click did not reach the remote desktop"
            x, y = map(int, desktop.clicks.read_text().split()[:2])
            assert abs(x - CLICK_X) <= 3 and abs(y - CLICK_Y) <= 3, (x, y)
            time.sleep(0.5)  # let the "clicked!" label come back through the tunnel for the screenshot
            screenshot(page, "vnc")
            page.click("#vnc-disconnect")
            page.wait_for_function("document.body.dataset.vncState === 'disconnected'")
            # The tunnel carried its one connection: the page says what to do before connecting again.
            assert "run the tunnel command on the remote machine again" in (page.text_content("#vnc-status") or "")
        finally:
            stop_process(tunnel)
            tunnel_log.close()


def test_nothing_behind_the_paths_gives_a_clear_message_in_time(
    http_base: str, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    """No tunnel at all, then a tunnel with no VNC server behind it: each ends in one clear message."""
    base = f"vnc-{uuid.uuid4().hex[:10]}"
    # "wait=3": the page's own deadline, shortened for the test.
    page = new_page(f"{https_base}/#vnc?path1={base}/up&path2={base}/down&wait=3")
    assert page.input_value("#vnc-path1") == f"{base}/up"
    assert page.is_visible("#vnc-copy") and "-k" in (page.text_content("#vnc-mode") or "")
    page.click("#vnc-connect")
    page.wait_for_function("document.body.dataset.vncState === 'disconnected'")
    status = page.text_content("#vnc-status") or ""
    assert "No answer through the tunnel after 3 s" in status and "port 5900" in status, status

    # A tunnel runs, but nothing listens on the port it forwards to.
    base = f"vnc-{uuid.uuid4().hex[:10]}"
    tunnel_log = (tmp_path / "tunnel.log").open("wb")
    tunnel = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "piping_server.cli",
            "tunnel",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "-s",
            http_base,
            f"{base}/up",
            f"{base}/down",
        ],
        stdout=tunnel_log,
        stderr=subprocess.STDOUT,
    )
    try:
        page.evaluate(f"location.hash = '#vnc?path1={base}/up&path2={base}/down&wait=3'")
        page.wait_for_function(f"document.getElementById('vnc-path1').value === '{base}/up'")
        page.click("#vnc-connect")
        page.wait_for_function("document.body.dataset.vncState === 'disconnected'")
        status = page.text_content("#vnc-status") or ""
        assert page.get_attribute("#vnc-status", "class") == "status error", status
        assert "VNC server listening" in status or "No answer through the tunnel" in status, status
    finally:
        stop_process(tunnel)
        tunnel_log.close()
