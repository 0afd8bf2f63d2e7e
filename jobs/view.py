"""``lode view OUT``: browse an output in a local web page (127.0.0.1 only, no network needed).

OUT is the output of ``segment``, ``run`` or ``stitch`` (a folder holding lode.ome.zarr, or the
store itself; local or an fsspec URI), or of ``lineaments`` / ``prospect run``. The page streams
the panorama pyramid chunk by chunk from the store, overlays the mineral labels, and shows the
grain under a click from grains.parquet beside the store.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from jobs.contract import Job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="OUT", help="output folder or store to view (local or a URI)")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--open", action="store_true", help="also open the page in the default browser")
    parser.add_argument("--request-log", default=None, help="append one line per HTTP request to this file")


def run(args: Any) -> int:
    """Serve ``args.target`` until interrupted; the viewer writes nothing (no output, no manifest)."""
    from engine.errors import LodeInputError
    from engine.view.server import ViewServer, bundle_missing
    from engine.view.site import Site

    if bundle_missing():
        raise LodeInputError("engine/view/web/dist/viewer.js", "viewer bundle not built: run `make viewer`")
    site = Site(args.target)
    site.manifest()  # read the store's metadata (and any unreadable input) before serving
    site.grains()
    with contextlib.ExitStack() as stack:
        log = None
        if args.request_log:
            handle = stack.enter_context(open(args.request_log, "a", buffering=1))

            def log(line: str) -> None:
                handle.write(line + "\n")

        try:
            server = ViewServer(site, args.port, log)
        except OSError as exc:
            raise LodeInputError(f"--port {args.port}", f"cannot listen on 127.0.0.1: {exc.strerror}") from None
        print(f"lode view: serving {site.out} at {server.url} (Ctrl-C to stop)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(server.url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0


JOB = Job("view", add_arguments, run, description=__doc__, uri_fields=("target",))

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
