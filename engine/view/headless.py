"""``lode view`` driven headless, for the viewer tests and the viewer benchmark: Debian ``chromium``
with one page over a small synchronous Chrome DevTools Protocol client (aiohttp's websocket;
console errors collected, screenshots decoded with OpenCV), and ``lode view`` run as a process
the way a user starts it, logging every HTTP request."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import cv2
import numpy as np

WIDTH, HEIGHT = 1000, 700
ROOT = Path(__file__).resolve().parents[2]


def browser_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome-headless-shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Chromium:
    """Headless Chromium (``WIDTH`` × ``HEIGHT`` CSS px) with one page target driven over the DevTools protocol."""

    session: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse

    def __init__(self, profile: Path):
        exe = browser_path()
        if exe is None:
            raise RuntimeError("no headless browser: install the Debian package 'chromium'")
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            self.port = self._devtools_port()
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10).read())
            page = next(t for t in targets if t["type"] == "page")
            self.loop = asyncio.new_event_loop()
            self.ids = itertools.count(1)
            self.events: list[dict] = []
            self.loop.run_until_complete(self._connect(page["webSocketDebuggerUrl"]))
        except BaseException:
            _stop(self.proc)
            raise
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def _devtools_port(self) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep the pipe drained
                return int(m.group(1))
        raise RuntimeError("chromium did not report its DevTools port")

    async def _connect(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, max_msg_size=0)

    async def _call(self, method: str, params: dict, timeout: float) -> Any:
        ident = next(self.ids)
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        async with asyncio.timeout(timeout):
            while True:
                msg = json.loads((await self.ws.receive()).data)
                if msg.get("id") == ident:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg.get("result", {})
                if "method" in msg:
                    self.events.append(msg)

    def send(self, method: str, timeout: float = 60, **params: Any) -> Any:
        return self.loop.run_until_complete(self._call(method, params, timeout))

    def version(self) -> str:
        return str(self.send("Browser.getVersion")["product"])

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """Value of a JavaScript expression (promises awaited); raises on a thrown exception."""
        res = self.send(
            "Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def goto(self, url: str, timeout: float = 60) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise TimeoutError(url)
            time.sleep(0.02)

    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(str(p.get("exceptionDetails", {}).get("exception", {}).get("description")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out

    def screenshot(self) -> np.ndarray:
        """The page as an RGB array ``(HEIGHT, WIDTH, 3)``."""
        png = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError("chromium returned a screenshot OpenCV cannot decode")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def click(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.session.close())
        finally:
            self.loop.close()
            _stop(self.proc)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class ViewProcess:
    """``python -m jobs.view TARGET --port 0 --request-log LOG`` (the ``lode view`` command, run as
    a process, not imported) serving until :meth:`stop`; :meth:`requests` reads the log's lines."""

    def __init__(self, target: Path, log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.view", str(target), "--port", "0", "--request-log", str(log)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if not m:
            _stop(self.proc)
            raise RuntimeError(f"lode view did not start: {line}{self.proc.stderr.read()}")
        self.url = m.group(1)

    def requests(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> ViewProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
