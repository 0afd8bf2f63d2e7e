import json

import numpy as np
import pytest
import zarr

from engine.geophys.dataset import example_seed, generate_training_set
from engine.geophys.synth import SurveyConfig, make_survey

pytestmark = pytest.mark.ray


def test_training_set_matches_direct_generation(tmp_path, ray_session):
    cfg = SurveyConfig(shape=(64, 64))
    out = generate_training_set(tmp_path / "set.zarr", n=5, config=cfg, seed=3, num_tasks=3)
    group = zarr.open_group(str(out), mode="r")
    assert group["anomaly"].shape == (5, 64, 64) and group["target"].dtype == np.uint8
    for i in (0, 4):
        s = make_survey(example_seed(3, i), cfg)
        np.testing.assert_array_equal(group["anomaly"][i], s.anomaly)
        np.testing.assert_array_equal(group["target"][i], s.target)
        assert group["inclination"][i] == pytest.approx(s.inclination)
    assert not (tmp_path / ".set.zarr.tmp").exists()


@pytest.mark.slow
def test_ray_train_loop_writes_loadable_checkpoint(tmp_path, ray_session):
    import torch

    from engine.geophys.model import load_checkpoint
    from engine.geophys.train import TrainConfig, sample_batch, train

    data = generate_training_set(tmp_path / "set.zarr", n=4, config=SurveyConfig(shape=(64, 64)), seed=0)
    xb, yb = sample_batch(
        np.random.default_rng(0),
        *(np.asarray(zarr.open_group(str(data))[k][:], np.float32) for k in ("anomaly", "target")),
        3,
        32,
    )
    assert xb.shape == yb.shape == (3, 1, 32, 32) and set(np.unique(yb)) <= {0.0, 1.0}
    ckpt = train(
        TrainConfig(
            data=str(data), out=str(tmp_path / "run"), window=32, batch_size=2, epochs=2, steps_per_epoch=1, threads=1
        )
    )
    model, card = load_checkpoint(ckpt)
    assert card.encoder == "vgg16_bn" and card.window == 32 and card.trained["steps"] == 2
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.slow  # ~25 s; the same resume from last/ is in the default suite for the prospectivity trainers
def test_a_resumed_lineament_run_ends_where_an_uninterrupted_one_does(tmp_path, kill_after_epoch):
    """In-process executor: a run killed after epoch 1's checkpoint and resumed from ``last/`` gives
    bit-identical weights to the uninterrupted run, and its history runs on without a gap."""
    import torch

    from engine.errors import LodeInputError
    from engine.geophys.model import load_checkpoint
    from engine.geophys.train import TrainConfig, train

    surveys = [make_survey(example_seed(1, i), SurveyConfig(shape=(48, 48))) for i in range(2)]
    data = tmp_path / "set.zarr"
    group = zarr.open_group(str(data), mode="w")
    group.create_array("anomaly", data=np.stack([s.anomaly for s in surveys]).astype(np.float32))
    group.create_array("target", data=np.stack([s.target for s in surveys]))
    common = dict(data=str(data), window=32, batch_size=2, epochs=3, steps_per_epoch=1, threads=1, executor="local")
    whole = train(TrainConfig(out=str(tmp_path / "whole"), **common))

    with kill_after_epoch(1):
        train(TrainConfig(out=str(tmp_path / "cut"), **common))
    last = tmp_path / "cut" / "last"
    resumed = train(TrainConfig(out=str(tmp_path / "cut"), resume=str(last), **common))
    a, b = load_checkpoint(whole)[0].state_dict(), load_checkpoint(resumed)[0].state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    history = json.loads((tmp_path / "cut" / "train_metrics.json").read_text())["history"]
    assert [r["step"] for r in history] == [1, 2, 3]
    with pytest.raises(LodeInputError, match="nothing to train"):
        train(TrainConfig(out=str(tmp_path / "again"), resume=str(last), **common))


@pytest.mark.slow
def test_two_ray_train_workers_split_the_lineament_batch(tmp_path, ray_session):
    from engine.geophys.model import load_checkpoint
    from engine.geophys.train import TrainConfig, train

    data = generate_training_set(tmp_path / "set.zarr", n=2, config=SurveyConfig(shape=(48, 48)), seed=0)
    ckpt = train(
        TrainConfig(
            data=str(data),
            out=str(tmp_path / "run"),
            window=32,
            batch_size=4,
            epochs=2,
            steps_per_epoch=1,
            threads=1,
            workers=2,
        )
    )
    _, card = load_checkpoint(ckpt)
    assert card.trained["steps"] == 2
    history = json.loads((tmp_path / "run" / "train_metrics.json").read_text())["history"]
    assert [r["world_size"] for r in history] == [2, 2]
