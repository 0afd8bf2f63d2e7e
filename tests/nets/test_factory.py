import pytest
import torch

from engine.nets import KINDS, build
from engine.nets.mae import ConvAutoencoder, ProspectMAE


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize(
    ("kind", "config", "direct"),
    [
        ("mae", dict(channels=3, window=16, patch=4, fused=8, dim=16, depth=1, heads=2), ProspectMAE),
        ("cae", dict(channels=3, width=8, window=16), ConvAutoencoder),
    ],
)
def test_prospect_networks_from_the_factory_are_the_classes_built_directly(kind, config, direct):
    """Seeded alike, the factory's network has the very weights of the class called directly, so
    checkpoints written before the factory load into it unchanged."""
    torch.manual_seed(5)
    ours = build(kind, **config)
    torch.manual_seed(5)
    _same_weights(ours, direct(**config))


def test_smp_networks_from_the_factory_match_smp_and_run():
    import segmentation_models_pytorch as smp

    torch.manual_seed(1)
    ours = build("UNet".lower(), encoder="resnet18", in_channels=4, classes=6).eval()
    torch.manual_seed(1)
    _same_weights(
        ours, smp.create_model("unet", encoder_name="resnet18", encoder_weights=None, in_channels=4, classes=6)
    )
    with torch.no_grad():
        assert ours(torch.zeros(1, 4, 64, 64)).shape == (1, 6, 64, 64)


def test_unknown_kinds_and_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown network kind 'vit'"):
        build("vit", channels=3)
    with pytest.raises(TypeError):
        build("mae", channels=3, encoder="resnet18")
    assert {"mae", "cae", "unet", "pspnet"} <= set(KINDS)
