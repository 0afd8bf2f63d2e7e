"""Bad input to ``lode view``: one line naming the input, exit 2, nothing written where it looked."""

from __future__ import annotations

import socket

from tests.jobs.test_bad_input import earlier_output, fails_naming  # noqa: F401


def test_missing_output_folder(tmp_path, capsys):
    fails_naming(["view", str(tmp_path / "no-such-run")], tmp_path / "no-such-run", capsys, reason="no such")


def test_folder_with_nothing_to_view(earlier_output, capsys):  # noqa: F811
    fails_naming(["view", str(earlier_output)], earlier_output, capsys, earlier_output, reason="nothing to view")


def test_port_in_use(tmp_path, capsys):
    import numpy as np

    from tests.analyze.synthetic_sections import write_store

    store = write_store(tmp_path / "lode.ome.zarr", {"s": np.zeros((64, 64), np.uint8)}, block=64)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        fails_naming(["view", str(store), "--port", str(port)], f"--port {port}", capsys, reason="cannot listen")
