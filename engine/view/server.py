"""The local HTTP server of ``lode view``: the page, its bundle, a small JSON API and the store's
own files with HTTP Range support, so that the browser reads just the shard-index and chunk byte
ranges of the tiles it shows (zarr v3 sharding). Listens on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from engine.errors import LodeInputError
from engine.io import fs
from engine.view.site import Site

WEB = Path(__file__).parent / "web"
DIST = WEB / "dist"
STATIC = {
    "/": (WEB / "index.html", "text/html; charset=utf-8"),
    "/viewer.js": (DIST / "viewer.js", "text/javascript"),
    "/viewer.js.map": (DIST / "viewer.js.map", "application/json"),
    "/viewer.css": (WEB / "viewer.css", "text/css"),
}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def bundle_missing() -> bool:
    return not (DIST / "viewer.js").is_file()


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single-range ``Range`` header; None when unsatisfiable."""
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        n = int(m.group(2))
        return (max(size - n, 0), size) if n > 0 else None
    start = int(m.group(1))
    end = min(int(m.group(2)) + 1, size) if m.group(2) else size
    return (start, end) if start < end else None


class _Handler(BaseHTTPRequestHandler):
    site: Site
    log_request_line: Callable[[str], None] | None = None
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(
        self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None, length: int | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.log_request_line is not None:
            self.log_request_line(f"{self.command} {self.path} {self.headers.get('Range', '-')} {status} {len(body)}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: object, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        try:
            if path == "/favicon.ico":
                self._send(204, b"", "image/x-icon")
            elif path in STATIC:
                file, ctype = STATIC[path]
                if not file.is_file():
                    self._send(404, b"viewer bundle not built: run `make viewer`", "text/plain")
                    return
                self._send(200, file.read_bytes(), ctype)
            elif path.startswith("/store/"):
                self._store_file(path.removeprefix("/store/"))
            elif path == "/api/manifest.json":
                self._json(self.site.manifest())
            elif path == "/api/grain":
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                self._json(
                    {
                        "grain": self.site.grain_at(q["section"], int(float(q["y"])), int(float(q["x"]))),
                        "table": self.site.grains() is not None,
                    }
                )
            elif path.startswith("/api/seams/") and path.endswith(".png") and self.site.store:
                from engine.view.sections import seams_png

                self._send(200, seams_png(self.site.store, path[len("/api/seams/") : -4]), "image/png")
            elif path.startswith("/api/layer/") and path.endswith(".png"):
                layers = list(self.site.layers.values())
                self._send(200, layers[int(path[len("/api/layer/") : -4])].png(), "image/png")
            else:
                self._send(404, b"not found", "text/plain")
        except (LodeInputError, KeyError, ValueError, IndexError) as exc:
            self._send(400, str(exc).encode(), "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _store_file(self, rel: str) -> None:
        loc = self.site.file(rel)
        size = _size(loc)
        if size is None:
            self._send(404, b"", "application/octet-stream")
            return
        header = self.headers.get("Range")
        if self.command == "HEAD":
            self._send(200, b"", "application/octet-stream", {"Accept-Ranges": "bytes"}, length=size)
            return
        if header is None:
            self._send(200, _read(loc, 0, size), "application/octet-stream", {"Accept-Ranges": "bytes"})
            return
        rng = parse_range(header, size)
        if rng is None:
            self._send(416, b"", "application/octet-stream", {"Content-Range": f"bytes */{size}"})
            return
        start, end = rng
        self._send(
            206,
            _read(loc, start, end),
            "application/octet-stream",
            {"Content-Range": f"bytes {start}-{end - 1}/{size}", "Accept-Ranges": "bytes"},
        )


def _size(loc: str) -> int | None:
    """Size of a store file (local path or URI); None when there is no such file."""
    if not fs.is_uri(loc):
        try:
            st = os.stat(loc)
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None
    filesystem, inner = fs.filesystem(loc)
    return int(filesystem.size(inner)) if filesystem.isfile(inner) else None


def _read(loc: str, start: int, end: int) -> bytes:
    if not fs.is_uri(loc):
        with open(loc, "rb") as f:
            f.seek(start)
            return f.read(end - start)
    filesystem, inner = fs.filesystem(loc)
    return bytes(filesystem.cat_file(inner, start=start, end=end))


class ViewServer:
    """A running viewer on ``127.0.0.1:port`` (0 picks a free port) serving ``site``; ``log``
    receives one line per request: ``METHOD PATH RANGE STATUS BYTES``."""

    def __init__(self, site: Site, port: int = 0, log: Callable[[str], None] | None = None):
        handler = type("Handler", (_Handler,), {"site": site, "log_request_line": staticmethod(log) if log else None})
        self.site = site
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread: threading.Thread | None = None

    def start(self) -> ViewServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
