"""Prospect checkpoints in Lode's one format, and the earlier prospect format still loading."""

import numpy as np
import pytest
import torch

from engine.errors import LodeInputError
from engine.io.torchfile import tensor_list
from engine.nets import build
from engine.prospect.checkpoint import ProspectCard, load_checkpoint, read_card, save_checkpoint

CHANNELS = ["mag", "grav", "k", "th"]
CONFIG = dict(
    channels=4,
    window=16,
    patch=4,
    fused=8,
    dim=16,
    depth=1,
    heads=2,
    decoder_dim=16,
    decoder_depth=1,
    mask_ratio=0.5,
    group=2,
)


def _mae():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16)).astype(np.float32)
    return build("mae", **CONFIG).eval(), {"mean": rng.normal(size=16).astype(np.float32), "precision": a @ a.T}


def _encode(net) -> torch.Tensor:
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 4, 16, 16)).astype(np.float32))
    with torch.no_grad():
        return net.encode(x, torch.ones(2, 16, 16))


def test_a_checkpoint_round_trips_weights_card_and_latent_gaussian(tmp_path):
    net, latent = _mae()
    path = save_checkpoint(tmp_path / "m.pt", net, "mae", CHANNELS, latent, {"steps": 7})
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"state_dict", "tensors", "card", "latent"}
    card = read_card(path)
    assert card == ProspectCard(kind="mae", config=CONFIG, channels=CHANNELS, train={"steps": 7})
    model, loaded, got = load_checkpoint(path)
    assert loaded == card and torch.equal(_encode(model), _encode(net))
    for k in ("mean", "precision"):
        assert got[k].dtype == np.float32 and np.array_equal(got[k], latent[k])


def test_a_checkpoint_of_the_earlier_prospect_format_still_loads(tmp_path):
    """The earlier writer's layout (kind, config, channels and train at the top level, the latent
    Gaussian as numpy arrays, no card), written here as it did: the card reads without torch and
    the model and latent Gaussian load unchanged."""
    net, latent = _mae()
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    old = {
        "kind": "mae",
        "config": net.config,
        "state_dict": state,
        "tensors": tensor_list(state),
        "channels": CHANNELS,
        "train": {"steps": 3},
        "latent": latent,
    }
    torch.save(old, tmp_path / "old.pt")
    assert read_card(tmp_path / "old.pt") == ProspectCard(
        kind="mae", config=CONFIG, channels=CHANNELS, train={"steps": 3}
    )
    model, _, got = load_checkpoint(tmp_path / "old.pt")
    assert torch.equal(_encode(model), _encode(net)) and np.array_equal(got["precision"], latent["precision"])


def test_an_mae_without_its_latent_gaussian_is_refused(tmp_path):
    net, _ = _mae()
    path = save_checkpoint(tmp_path / "m.pt", net, "mae", CHANNELS)
    with pytest.raises(LodeInputError, match=r"m\.pt: not a prospect checkpoint \(an MAE without its latent"):
        load_checkpoint(path)


def test_a_card_whose_channels_do_not_match_the_network_names_the_file(tmp_path):
    """Refused when written (the file is left as it was) and, for a file written otherwise, when read."""
    from engine.io.checkpoint import write_checkpoint

    net, latent = _mae()
    path = save_checkpoint(tmp_path / "m.pt", net, "mae", CHANNELS, latent)
    with pytest.raises(ValueError, match="4 for 3 channel names"):
        save_checkpoint(path, net, "mae", CHANNELS[:3], latent)
    assert read_card(path).channels == CHANNELS
    bad = ProspectCard.model_construct(kind="mae", config=CONFIG, channels=CHANNELS[:3], train={})
    write_checkpoint(tmp_path / "bad.pt", net.state_dict(), bad, {"latent": {}})
    for read in (read_card, load_checkpoint):
        with pytest.raises(LodeInputError, match=r"bad\.pt: not a prospect checkpoint \(model card: .*3 channel names"):
            read(tmp_path / "bad.pt")
