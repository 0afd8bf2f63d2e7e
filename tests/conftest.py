"""Shared fixtures: the one in-process Ray of the session (and a private head for `ray job submit`), a tiny
checkpoint, a small synthetic panorama."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_session():
    """The one in-process Ray of the test session: 2 CPUs, no dashboard, a short temp dir (AF_UNIX socket
    paths stay under 107 bytes), workers' logs kept out of the test output. A job run in-process joins it
    (``engine.runtime.init_ray`` uses a running Ray). Tests that need a cluster of their own (several
    nodes, a job killed in a subprocess) start it through :mod:`tests.cluster_utils`."""
    import shutil
    import tempfile

    import ray

    started = not ray.is_initialized()
    tmp = tempfile.mkdtemp(prefix="lode-ray-", dir="/tmp")
    if started:
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False, _temp_dir=tmp)
    yield ray
    if started:
        ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def jobs_join_ray_session(request, monkeypatch):
    """Code run in-process that starts Ray (``engine.runtime.init_ray``: every job and engine entry point)
    gets the session's Ray, so a test never starts a second one or one of another size."""
    import engine.runtime

    start = engine.runtime.init_ray

    def init_ray(*args, **kwargs):
        request.getfixturevalue("ray_session")
        start(*args, **kwargs)

    monkeypatch.setattr(engine.runtime, "init_ray", init_ray)


@pytest.fixture(scope="session")
def ray_head():
    """The address of one private Ray head node (its own processes, temp dir and ports) for the session's
    ``ray job submit`` tests; stopped at the end of the session."""
    from tests.cluster_utils import local_head

    with local_head() as address:
        yield address


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained UNet-ResNet18 over the LumenStone classes, window 128."""
    import torch

    from engine.classes import LUMENSTONE
    from engine.nets import build
    from engine.segment.checkpoint import ModelCard, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    model = build("unet", encoder="resnet18", in_channels=3, classes=len(LUMENSTONE))
    save_checkpoint(
        path,
        model,
        ModelCard(
            arch="unet",
            encoder="resnet18",
            classes=LUMENSTONE.to_dicts(),
            mean=[0.45, 0.42, 0.40],
            std=[0.25, 0.24, 0.26],
            window=128,
            overlap=0.25,
        ),
    )
    return path


@pytest.fixture(scope="session")
def small_panorama(tmp_path_factory) -> Path:
    """A 300×420 synthetic section stored as OME-Zarr (section id ``sec-a``) with truth labels."""
    from engine.io.ome import PyramidLayout
    from engine.synth import SectionSpec, write_panorama

    store = tmp_path_factory.mktemp("pano") / "in.zarr"
    write_panorama(
        store, "sec-a", 300, 420, SectionSpec(seed=5, grain_diameter=30), PyramidLayout((128, 128), chunk=64, levels=2)
    )
    return store


def monai_reference(store: Path, section: str, checkpoint: Path, program: bool = False):
    """Class probabilities of MONAI's gaussian sliding_window_inference over a whole stored image,
    with the eager model, or with the checkpoint's frozen channels-last program that the engine's
    CPU actors run (``program=True``: then only the blending differs from the engine)."""
    import torch
    import zarr
    from monai.inferers import sliding_window_inference

    from engine.segment.checkpoint import load_checkpoint, load_inference_model

    model, card = load_checkpoint(checkpoint)
    if program:
        frozen, _ = load_inference_model(checkpoint, card.window)
        model = lambda t: frozen(t.contiguous(memory_format=torch.channels_last))  # noqa: E731
    img = zarr.open_group(str(store), mode="r")[f"{section}/0"][:]
    mean = torch.tensor(card.mean).view(-1, 1, 1)
    std = torch.tensor(card.std).view(-1, 1, 1)
    x = (torch.from_numpy(img).float() / 255 - mean) / std
    with torch.no_grad():
        return sliding_window_inference(
            x[None],
            (card.window, card.window),
            4,
            lambda t: torch.softmax(model(t), 1),
            overlap=card.overlap,
            mode="gaussian",
        )[0].numpy()


@pytest.fixture(scope="module")
def s3():
    """A local S3 (moto's server on a free port) with bucket ``lode-test``; endpoint and credentials
    are set only in the environment, as on a cluster. Yields the endpoint URL."""
    import logging

    import requests
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "lode-test-key",
            "AWS_SECRET_ACCESS_KEY": "lode-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            mp.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()  # moto's state is per process
        s3fs.S3FileSystem().mkdir("lode-test")
        yield endpoint
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


class KilledAfterEpoch(Exception):
    """What :func:`kill_after_epoch` raises in place of a SIGKILL."""


@pytest.fixture
def kill_after_epoch():
    """``with kill_after_epoch(n): train(...)``: in-process training (``executor="local"``) inside
    the block stops once epoch ``n``'s checkpoint is written, as a killed run would; the block
    fails unless it was stopped."""
    from contextlib import contextmanager

    from engine.train import fit as fit_module

    report = fit_module._LocalContext.report

    @contextmanager
    def armed(epoch: int):
        def killed(self, metrics, write):
            report(self, metrics, write)
            if metrics["epoch"] == epoch:
                raise KilledAfterEpoch

        with pytest.MonkeyPatch.context() as m, pytest.raises(KilledAfterEpoch):
            m.setattr(fit_module._LocalContext, "report", killed)
            yield

    return armed
