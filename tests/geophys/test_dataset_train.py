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
    assert card["encoder"] == "vgg16_bn" and card["window"] == 32 and card["trained"]["steps"] == 2
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
