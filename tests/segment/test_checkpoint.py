import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.classes import LUMENSTONE, ClassSet
from engine.errors import LodeInputError
from engine.nets import build
from engine.segment.card import check_checkpoint
from engine.segment.checkpoint import ModelCard, load_checkpoint, load_inference_model, read_card, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_roundtrip_rebuilds_model_from_card_alone(tmp_path):
    torch.manual_seed(0)
    classes = ClassSet.from_codes([0, 1, 6, 8])
    m = build("fpn", encoder="resnet18", in_channels=5, classes=len(classes)).eval()
    card = save_checkpoint(
        tmp_path / "m.pt",
        m,
        ModelCard(
            arch="fpn", classes=classes.to_dicts(), in_channels=5, channels=list("RGBXY"), mean=[0.5] * 5, std=[0.2] * 5
        ),
    )
    m2, card2 = load_checkpoint(tmp_path / "m.pt")
    x = torch.randn(1, 5, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), m2(x))
    assert card2.model_id == card.model_id and card2.class_set().codes == [0, 1, 6, 8]


@pytest.mark.parametrize("arch", ["pspnet", "unet"])
def test_inference_program_matches_eager_model(tmp_path, arch):
    torch.manual_seed(2)
    classes = ClassSet.from_codes([0, 1, 2, 6, 8])
    m = build(arch, encoder="resnet18", in_channels=4, classes=len(classes)).eval()
    save_checkpoint(
        tmp_path / "m.pt",
        m,
        ModelCard(
            arch=arch,
            classes=classes.to_dicts(),
            in_channels=4,
            channels=list("RGBX"),
            mean=[0.5] * 4,
            std=[0.2] * 4,
            window=96,
        ),
    )
    program, _ = load_inference_model(tmp_path / "m.pt", 96)
    assert isinstance(program, torch.jit.ScriptModule)
    x = torch.randn(3, 4, 96, 96)
    with torch.inference_mode():
        ref = torch.softmax(m(x), 1)
        got = torch.softmax(program(x.contiguous(memory_format=torch.channels_last)), 1)
    assert (got - ref).abs().max().item() <= 1e-4
    eager, _ = load_inference_model(tmp_path / "m.pt", 128)
    assert not isinstance(eager, torch.jit.ScriptModule)


@pytest.mark.parametrize("arch", ["pspnet", "unet", "upernet", "fpn"])
def test_factory_builds_each_architecture(arch):
    m = build(arch, encoder="resnet18", in_channels=4, classes=7).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 4, 128, 128)).shape == (1, 7, 128, 128)


@pytest.mark.parametrize("read", [load_checkpoint, read_card])
@pytest.mark.parametrize("writer", ["save_checkpoint", "bare torch.save"])
def test_unknown_class_code_in_checkpoint_names_the_file(tmp_path, read, writer):
    m = build("unet", encoder="resnet18", in_channels=3, classes=2)
    classes = LUMENSTONE.to_dicts()[:1] + [{"code": 99, "name": "unobtainium", "color": [1, 2, 3]}]
    card = ModelCard(arch="unet", classes=classes, window=64)
    if writer == "save_checkpoint":
        save_checkpoint(tmp_path / "bad.pt", m, card)
    else:
        torch.save({"state_dict": m.state_dict(), "card": card.model_dump()}, tmp_path / "bad.pt")
    with pytest.raises(LodeInputError, match=r"bad\.pt.*unknown class code 99"):
        read(tmp_path / "bad.pt")


def test_card_of_an_older_checkpoint_without_the_json_entry(tmp_path):
    m = build("unet", encoder="resnet18", in_channels=3, classes=3)
    card = ModelCard(arch="unet", classes=ClassSet.from_codes([0, 4, 9]).to_dicts(), window=64, model_id="old")
    torch.save({"state_dict": m.state_dict(), "card": card.model_dump()}, tmp_path / "old.pt")
    assert read_card(tmp_path / "old.pt") == card


def test_segmentation_driver_and_block_tasks_read_the_card_without_torch(tmp_path):
    """Read and write tasks import the pipeline module; only the model actor needs torch."""
    card = save_checkpoint(
        tmp_path / "m.pt",
        build("unet", encoder="resnet18", in_channels=3, classes=2),
        ModelCard(arch="unet", classes=ClassSet.from_codes([0, 1]).to_dicts(), window=64),
    )
    code = (
        "import sys; import engine.segment.pipeline as p; c = p.check_checkpoint(sys.argv[1]); "
        "print(c.model_id, 'torch' in sys.modules)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.pt")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [card.model_id, "False"]


def test_garbage_checkpoint_names_the_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LodeInputError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def _damaged(src: Path, dst: Path, edit) -> Path:
    import io
    import zipfile

    import torch

    from engine.io.checkpoint import CARD_ENTRY

    blob = torch.load(src, map_location="cpu", weights_only=True)
    edit(blob["state_dict"])
    buf = io.BytesIO()
    torch.save(blob, buf)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr(f"{z.namelist()[0].split('/')[0]}/{CARD_ENTRY}", __import__("json").dumps(blob["card"]))
    dst.write_bytes(buf.getvalue())
    return dst


MISSING = (lambda sd: sd.pop(sorted(sd)[3]), r"1 tensor\(s\) missing")


@pytest.mark.parametrize(
    "damage,message",
    [
        MISSING,
        (lambda sd: sd.__setitem__(sorted(sd)[0], sd[sorted(sd)[0]][:1]), r"1 tensor\(s\) of the wrong shape"),
        (lambda sd: sd[sorted(k for k in sd if k.endswith("weight"))[0]].fill_(float("nan")), "NaN"),
    ],
    ids=["missing", "shape", "nan"],
)
def test_a_damaged_checkpoint_is_refused_before_ray_starts(tmp_path, tiny_checkpoint, damage, message):
    """An intact card over damaged weights is refused without Ray, in seconds."""
    import ray

    bad = _damaged(tiny_checkpoint, tmp_path / "bad.pt", damage)
    started = ray.is_initialized()
    with pytest.raises(LodeInputError, match=message):
        check_checkpoint(bad)
    assert ray.is_initialized() == started
    assert check_checkpoint(tiny_checkpoint).model_id


def test_segmentation_with_a_damaged_checkpoint_fails_in_one_line(tmp_path, tiny_checkpoint):
    bad = _damaged(tiny_checkpoint, tmp_path / "bad.pt", MISSING[0])
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.segment", str(tmp_path), "--out", str(tmp_path / "o"), "--checkpoint", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(bad) in proc.stderr and "tensor(s) missing" in proc.stderr and "raylet" not in proc.stderr
    assert not (tmp_path / "o" / "lode.ome.zarr").exists()


FIXTURES = Path(__file__).parent / "fixtures"


def test_a_checkpoint_from_before_the_shared_format_loads_and_predicts_identically():
    """``fixtures/checkpoint_2026_12.pt`` was written by the segmentation checkpoint writer of
    December 2026 (pspnet on timm's 133k-parameter test ResNet, random weights), and its logits on a
    seeded batch were stored beside it. It keeps loading: the card reads without torch, the eager
    model and the traced program both give those logits, and the whole-file check passes."""
    path = FIXTURES / "checkpoint_2026_12.pt"
    x = torch.from_numpy(np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32))
    want = torch.from_numpy(np.load(FIXTURES / "checkpoint_2026_12_logits.npz")["logits"])
    card = read_card(path)
    assert (card.arch, card.encoder, card.window, card.class_set().codes) == (
        "pspnet",
        "tu-test_resnet",
        64,
        [1, 2, 3, 4],
    )
    assert card.model_id == "pspnet-tu-test_resnet-6728780d209d12d5"
    model, loaded = load_checkpoint(path)
    assert loaded == card
    program, _ = load_inference_model(path, 64)
    with torch.no_grad():
        eager = model(x)
        traced = program(x.contiguous(memory_format=torch.channels_last))
    assert (eager - want).abs().max().item() <= 1e-5
    assert (traced - want).abs().max().item() <= 1e-5
    assert torch.equal(eager.argmax(1), want.argmax(1)) and torch.equal(traced.argmax(1), want.argmax(1))
    assert check_checkpoint(path) == card
