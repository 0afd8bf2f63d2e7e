import json

import numpy as np
import pytest
import torch

from engine.errors import LodeInputError
from engine.segment.checkpoint import load_checkpoint
from engine.synth import write_lumenstone
from engine.train.loop import train
from schemas.config import TrainConfig

pytestmark = pytest.mark.ray


def test_minimal_training_writes_a_usable_checkpoint(ray_local, tmp_path):
    data = write_lumenstone(tmp_path / "ds", n_train=3, n_test=1, size=(160, 192), associations=("S2",), seed=4)
    ckpt = train(TrainConfig(data=str(data), out=str(tmp_path / "m"), arch="unet", steps=16, patch=96,
                             batch_size=4, window=128))
    model, card = load_checkpoint(ckpt)
    masks = [np.unique(__import__("cv2").imread(str(p), -1)) for p in (data / "masks" / "train").glob("*.png")]
    assert card.class_set().codes == sorted(set(np.concatenate(masks).tolist()))
    assert card.window == 128 and card.model_id
    assert all(0 < m < 1 for m in card.mean) and all(0 < s < 0.5 for s in card.std)
    assert set(card.reference_colors) <= {str(c) for c in card.class_set().codes}
    metrics = json.loads((tmp_path / "m" / "train_metrics.json").read_text())
    assert metrics["step"] == 16 and metrics["loss"] < metrics["first_loss"]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 128, 128)).shape == (1, len(card.classes), 128, 128)


def test_unknown_class_code_in_masks_names_the_mask(tmp_path):
    import cv2

    data = write_lumenstone(tmp_path / "ds", n_train=1, n_test=0, size=(64, 64), associations=("S1",), seed=1)
    mask_path = next((data / "masks" / "train").glob("*.png"))
    m = cv2.imread(str(mask_path), -1)
    m[0, 0] = 77
    cv2.imwrite(str(mask_path), m)
    with pytest.raises(LodeInputError, match=rf"{mask_path.name}.*unknown class code 77"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "m"), steps=1))
