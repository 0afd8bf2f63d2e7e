"""Reading torch.save archives without torch, checked against torch's own loader."""

import io
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from engine.errors import LodeInputError
from engine.io.torchfile import TensorInfo, check_tensors, read_without_torch, tensor_list


def _archive(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def _state() -> OrderedDict:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(5, 2))
    return net.state_dict()


def test_shapes_and_plain_fields_match_torchs_loader():
    state = _state()
    blob = {
        "state_dict": state,
        "tensors": tensor_list(state),
        "card": {"window": 64, "names": ["a", "b"]},
        "program": b"\x00\xffbytes",
        "latent": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    got = read_without_torch(_archive(blob), "m.pt", "checkpoint")
    want = torch.load(_archive(blob), weights_only=False)  # our own file: numpy arrays allowed
    assert {k: v.shape for k, v in got["state_dict"].items()} == {
        k: tuple(v.shape) for k, v in want["state_dict"].items()
    }
    assert isinstance(got["state_dict"]["1.num_batches_tracked"], TensorInfo)
    assert got["state_dict"]["1.num_batches_tracked"].storage == "LongStorage"
    assert got["card"] == want["card"] and got["program"] == want["program"] and got["tensors"] == want["tensors"]
    np.testing.assert_array_equal(got["latent"], want["latent"])
    check_tensors(got["state_dict"], got["tensors"], "m.pt")


def _without(buf: io.BytesIO, record: str) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith(record):
                dst.writestr(item, src.read(item))
    out.seek(0)
    return out


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda b: _without(b, "/data/0"), "damaged archive"),
        (lambda b: io.BytesIO(b.getvalue()[:100]), "not a torch zip archive"),
        (lambda b: _archive({"obj": torch.nn.ReLU()}), "holds objects other than tensors and plain data"),
    ],
)
def test_damaged_archives_are_refused_naming_the_file(damage, reason):
    with pytest.raises(LodeInputError, match=reason) as err:
        read_without_torch(damage(_archive({"state_dict": _state()})), "/data/m.pt", "Lode checkpoint")
    assert str(err.value).startswith("/data/m.pt: not a Lode checkpoint")


@pytest.mark.parametrize(
    "edit,reason",
    [
        (lambda sd: sd.pop("0.weight"), r"1 tensor\(s\) missing \(first: 0.weight\)"),
        (lambda sd: sd.__setitem__("extra", torch.zeros(1)), r"1 unexpected tensor\(s\) \(first: extra\)"),
        (lambda sd: sd.__setitem__("2.bias", torch.zeros(3)), r"1 tensor\(s\) of the wrong shape \(first: 2.bias\)"),
    ],
)
def test_a_state_that_does_not_fit_its_list(edit, reason):
    state = _state()
    listed = tensor_list(state)
    edit(state)
    got = read_without_torch(_archive({"state_dict": state}), "m.pt", "checkpoint")
    with pytest.raises(LodeInputError, match=reason):
        check_tensors(got["state_dict"], listed, "m.pt")


def test_reading_imports_no_torch(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(_archive({"state_dict": _state()}).getvalue())
    code = (
        "import sys; from engine.io.torchfile import read_without_torch as r; "
        f"b = r({str(path)!r}, 'm', 'x'); print(len(b['state_dict']), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(_state())), "False"]
