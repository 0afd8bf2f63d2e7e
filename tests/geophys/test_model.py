import torch

from engine.geophys.card import LineamentCard
from engine.geophys.model import build_model, load_checkpoint, load_inference_model, save_checkpoint


def test_the_unet_comes_from_the_one_model_factory_unchanged():
    """``build_model`` goes through the one factory ``engine.nets.build``; with the same seed it
    gives the very network ``smp.create_model`` built before (so old checkpoints load the same)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(3)
    ours = build_model(LineamentCard()).state_dict()
    torch.manual_seed(3)
    direct = smp.create_model(
        "Unet", encoder_name="vgg16_bn", encoder_weights=None, in_channels=1, classes=1
    ).state_dict()
    assert ours.keys() == direct.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], direct[k], rtol=0, atol=0, msg=k)


def _small() -> tuple[torch.nn.Module, LineamentCard]:
    torch.manual_seed(0)
    card = LineamentCard(encoder="mobilenet_v2", window=32, trained={"steps": 3})
    return build_model(card).eval(), card


def test_a_checkpoint_is_lodes_one_format_and_its_card_reads_without_torch(tmp_path):
    """State dict + tensor list + card, the card once more as the JSON entry; in a fresh process
    the card reads back equal without importing torch."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    from engine.io.checkpoint import CARD_ENTRY

    net, card = _small()
    path = save_checkpoint(tmp_path / "m.pt", net, card)
    with zipfile.ZipFile(path) as z:
        assert any(n.endswith("/" + CARD_ENTRY) for n in z.namelist())
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"state_dict", "tensors", "card", "program"} and LineamentCard(**blob["card"]) == card
    code = (
        "import sys; from engine.geophys.card import read_card; "
        "print(read_card(sys.argv[1]).model_dump_json()); print('torch' in sys.modules)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert r.returncode == 0, r.stderr
    text, has_torch = r.stdout.splitlines()
    assert LineamentCard.model_validate_json(text) == card and has_torch == "False"
    model, loaded = load_checkpoint(path)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert loaded == card and torch.equal(model(x), net(x))


def test_cpu_inference_runs_the_traced_program_without_the_model_library_and_the_same_output(tmp_path):
    """A CPU actor loads the checkpoint's traced program with torch alone (no smp, timm,
    torchvision or torch's compiler stack imported) and it gives the rebuilt network's output bit
    for bit; a checkpoint without a program (written before) falls back to the rebuilt network."""
    import subprocess
    import sys
    from pathlib import Path

    from engine.io.checkpoint import write_checkpoint

    net, card = _small()
    path = save_checkpoint(tmp_path / "m.pt", net, card)
    x = torch.randn(3, 1, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch; from engine.geophys.model import load_inference_model; "
        "net = load_inference_model(sys.argv[1], 'cpu'); x = torch.load(sys.argv[2]); "
        "torch.save(net(x).detach(), sys.argv[3]); "
        "print(sorted(m for m in ('segmentation_models_pytorch', 'timm', 'torchvision', 'torch._dynamo') "
        "if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[-2] == "[]"
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), net(x))
    write_checkpoint(tmp_path / "old.pt", net.state_dict(), card)
    old = load_inference_model(tmp_path / "old.pt", "cpu")
    with torch.no_grad():
        assert not isinstance(old, torch.jit.ScriptModule) and torch.equal(old(x), net(x))


def test_a_lineament_checkpoint_of_the_earlier_format_still_loads(tmp_path):
    """The format before the shared one (``torch.save({"card": dict, "state_dict", "tensors"})``,
    no JSON entry, written here as its writer did) loads: card read without torch, same outputs."""
    from engine.geophys.card import read_card
    from engine.io.torchfile import tensor_list

    net, card = _small()
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    old = card.model_dump(exclude={"trained"}) | {"trained": {"steps": 3, "loss": 0.5}}
    torch.save({"card": old, "state_dict": state, "tensors": tensor_list(state)}, tmp_path / "old.pt")
    assert read_card(tmp_path / "old.pt").trained == {"steps": 3, "loss": 0.5}
    model, loaded = load_checkpoint(tmp_path / "old.pt")
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert loaded.window == 32 and torch.equal(model(x), net(x))


def test_a_card_that_does_not_describe_a_network_names_the_file_and_field(tmp_path):
    import pytest

    from engine.errors import LodeInputError
    from engine.io.checkpoint import write_checkpoint

    net, card = _small()
    path = tmp_path / "m.pt"
    write_checkpoint(path, net.state_dict(), card.model_copy(update={"window": -4}))
    with pytest.raises(LodeInputError, match=r"m\.pt: not a lineament model checkpoint \(model card: window"):
        load_checkpoint(path)
