import torch

from engine.geophys.model import DEFAULT_CARD, build_model


def test_the_unet_comes_from_the_one_model_factory_unchanged():
    """``build_model`` goes through ``engine.segment.models.create_model``; with the same seed it
    gives the very network ``smp.create_model`` built before (so old checkpoints load the same)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(3)
    ours = build_model(DEFAULT_CARD).state_dict()
    torch.manual_seed(3)
    direct = smp.create_model(
        "Unet", encoder_name="vgg16_bn", encoder_weights=None, in_channels=1, classes=1
    ).state_dict()
    assert ours.keys() == direct.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], direct[k], rtol=0, atol=0, msg=k)
