import csv
import hashlib
import json

import numpy as np
import pytest
import torch

from engine.errors import LodeInputError
from engine.segment.checkpoint import load_checkpoint
from engine.synth import write_lumenstone
from engine.train.fit import STATE_NAME
from engine.train.loop import TrainOptions, train

pytestmark = pytest.mark.ray


GALENA = 2  # not in the S2 association


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """S2-like sections; the held-out mask also holds a galena patch that no training mask has."""
    import cv2

    data = write_lumenstone(
        tmp_path_factory.mktemp("ds"),
        n_train=3,
        n_test=1,
        size=(160, 192),
        associations=("S2",),
        seed=4,
        grain_diameter=30,
    )
    mask_path = next((data / "masks" / "test").glob("*.png"))
    m = cv2.imread(str(mask_path), -1)
    m[10:30, 10:30] = GALENA
    cv2.imwrite(str(mask_path), m)
    return data


def _cfg(data, out, **kw):
    base = dict(
        data=str(data),
        out=str(out),
        arch="unet",
        steps=8,
        epochs=2,
        patch=64,
        batch_size=4,
        window=128,
        streams=1,
        seed=3,
    )
    return TrainOptions(**(base | kw))


@pytest.fixture(scope="module")
def full_run(ray_session, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return train(_cfg(tiny_data, out)), out


def test_training_writes_best_last_curves_and_a_usable_checkpoint(full_run, tiny_data):
    ckpt, out = full_run
    model, card = load_checkpoint(ckpt)
    import cv2

    codes = {
        split: set(
            np.concatenate(
                [np.unique(cv2.imread(str(p), -1)) for p in (tiny_data / "masks" / split).glob("*.png")]
            ).tolist()
        )
        for split in ("train", "test")
    }
    assert GALENA in codes["test"] - codes["train"]
    assert card.class_set().codes == sorted(codes["train"] | codes["test"])
    assert card.window == 128 and card.model_id and card.training["sampler"] == "balanced"
    assert all(0 < m < 1 for m in card.mean) and all(0 < s < 0.5 for s in card.std)
    metrics = json.loads((out / "train_metrics.json").read_text())
    hist = metrics["history"]
    assert [r["epoch"] for r in hist] == [0, 1] and [r["step"] for r in hist] == [4, 8]
    for r in hist:  # the mean of the per-class IoUs of classes present in truth or prediction
        assert r["val_miou"] == pytest.approx(np.mean([v for v in r["val_iou"].values() if v is not None]))
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert metrics["best_val_miou"] == max(r["val_miou"] for r in hist)
    best = hist[metrics["best_epoch"]]
    digest = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        digest.update(k.encode())
        digest.update(v.detach().contiguous().numpy().tobytes())
    assert card.model_id == f"unet-resnet18-{digest.hexdigest()[:16]}"  # names the weights saved
    assert abs(sum(best["sampled_share"].values()) - 1) < 1e-9
    rows = list(csv.DictReader((out / "curves.csv").open()))
    assert [float(r["val_miou"]) for r in rows] == pytest.approx([r["val_miou"] for r in hist])
    assert (out / "curves.png").stat().st_size > 1000
    assert (out / "last" / STATE_NAME).is_file()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 128, 128)).shape == (1, len(card.classes), 128, 128)


@pytest.mark.slow
def test_resumed_run_continues_from_its_checkpoint(full_run, tiny_data, tmp_path):
    """One epoch, then resume for the second: the same weights as two epochs straight through."""
    train(_cfg(tiny_data, tmp_path / "part", epochs=1, steps=4))
    train(_cfg(tiny_data, tmp_path / "resumed", resume=str(tmp_path / "part" / "last")))
    full = torch.load(full_run[1] / "last" / "model.pt", weights_only=True)["state_dict"]
    part = torch.load(tmp_path / "part" / "last" / "model.pt", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "resumed" / "last" / "model.pt", weights_only=True)["state_dict"]
    key = "segmentation_head.0.weight"
    assert not torch.allclose(part[key], full[key], atol=1e-6)
    for k in full:
        assert torch.allclose(resumed[k].float(), full[k].float(), atol=1e-4), k
    hist = json.loads((tmp_path / "resumed" / "train_metrics.json").read_text())["history"]
    first = json.loads((tmp_path / "part" / "train_metrics.json").read_text())["history"]
    assert len(hist) == 2 and hist[0] == first[0] and hist[1]["step"] == 8
    with pytest.raises(LodeInputError, match="nothing left to train"):
        train(_cfg(tiny_data, tmp_path / "again", resume=str(tmp_path / "resumed" / "last")))


def test_unknown_class_code_in_masks_names_the_mask(tmp_path):
    import cv2

    data = write_lumenstone(tmp_path / "ds", n_train=1, n_test=0, size=(64, 64), associations=("S1",), seed=1)
    mask_path = next((data / "masks" / "train").glob("*.png"))
    m = cv2.imread(str(mask_path), -1)
    m[0, 0] = 77
    cv2.imwrite(str(mask_path), m)
    with pytest.raises(LodeInputError, match=rf"{mask_path.name}.*unknown class code 77"):
        train(TrainOptions(data=str(data), out=str(tmp_path / "m"), steps=1))


@pytest.mark.slow
def test_a_run_killed_in_epoch_2_resumes_from_last_and_leaves_no_ray_process(tiny_data, tmp_path):
    """SIGKILL of the job process during its second epoch: every Ray process it started dies with
    it (checked by PID), and ``--resume OUT/last`` continues from the second epoch."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "out"
    args = [
        str(tiny_data),
        "--arch",
        "unet",
        "--steps",
        "30",
        "--epochs",
        "3",
        "--patch",
        "64",
        "--batch-size",
        "4",
        "--window",
        "128",
        "--streams",
        "1",
        "--seed",
        "3",
    ]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", *args, "--out", str(out)],
        cwd=root,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = out / "last" / STATE_NAME
    pids: set[int] = set()
    try:
        deadline = time.time() + 400
        while proc.poll() is None and not state.exists() and time.time() < deadline:
            pids |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it could be killed"
        pids |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert torch.load(state, weights_only=True)["epoch"] == 0
    assert len(pids) >= 3, "the job's Ray processes were not seen"
    deadline = time.time() + 30
    alive = pids
    while alive and time.time() < deadline:
        alive = {p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.5)
    assert not alive, [" ".join(psutil.Process(p).cmdline())[:80] for p in alive]
    killed = torch.load(state, weights_only=True)["history"]
    done = subprocess.run(
        [sys.executable, "-m", "jobs.train", *args, "--out", str(tmp_path / "resumed"), "--resume", str(out / "last")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    hist = json.loads((tmp_path / "resumed" / "train_metrics.json").read_text())["history"]
    assert [r["epoch"] for r in hist] == [0, 1, 2] and hist[0] == json.loads(json.dumps(killed[0]))
