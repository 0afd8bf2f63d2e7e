"""The colour-calibration stage and XPL channels in the segmentation job, and ``lode calibrate colour``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import zarr

from engine.calibrate.colour import fit_captures, load_matrices, reference_from_card
from engine.classes import ClassSet
from engine.errors import LodeInputError
from engine.nets import build
from engine.register.xpl import load_registered
from engine.segment.checkpoint import ModelCard, save_checkpoint
from engine.segment.pipeline import STORE_NAME, SegmentOptions, run_segmentation
from engine.synth.casts import partial_annotation, random_cast
from engine.synth.section import Section, SectionSpec
from engine.synth.xpl import write_xpl_collection
from engine.train.data import load_split
from engine.train.loop import reference_colors
from jobs.cli import main as lode

CLASSES = ClassSet.from_codes([0, 1, 2, 4, 6, 8, 11])


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def cast_captures(tmp_path_factory):
    """Two cast S1 captures with strip annotations, and a checkpoint whose card carries reference colours."""
    from engine.train.data import Sample

    root = tmp_path_factory.mktemp("casts")
    train = [Section(SectionSpec(seed=s, grain_diameter=24)).render(0, 0, 256, 320) for s in (1, 2)]
    ref = reference_colors([Sample(f"t{i}", r, m) for i, (r, m) in enumerate(train)], CLASSES)
    torch.manual_seed(0)
    ckpt = root / "model.pt"
    save_checkpoint(
        ckpt,
        build("unet", encoder="resnet18", in_channels=3, classes=len(CLASSES)),
        ModelCard(arch="unet", encoder="resnet18", classes=CLASSES.to_dicts(), window=128, reference_colors=ref),
    )
    cast = random_cast(np.random.default_rng(7), filter_name="yellow")
    for i, seed in enumerate((11, 12)):
        rgb, lab = Section(SectionSpec(seed=seed, grain_diameter=24)).render(0, 0, 200, 260)
        _write_rgb(root / "caps" / f"cap{i}.png", cast.apply(rgb))
        (root / "ann").mkdir(exist_ok=True)
        assert cv2.imwrite(str(root / "ann" / f"cap{i}.png"), partial_annotation(lab, 0.35))
    return root, ckpt


@pytest.mark.ray
@pytest.mark.slow  # 24-36 s: two segmentations. Default covers: the matrix applied in the model actor
# (test_predictor), which sections get which fitted matrix (test_annotated_colour_fits_only_the_annotated_sections)
@pytest.mark.parametrize("mode", ["per-image", "series"])
def test_colour_stage_equals_segmenting_corrected_captures(ray_session, cast_captures, tmp_path, mode):
    root, ckpt = cast_captures
    caps = sorted((root / "caps").glob("*.png"))
    matrices = fit_captures(
        caps,
        root / "ann",
        reference_from_card(ModelCard.model_validate(torch.load(ckpt, weights_only=True)["card"]).reference_colors),
        mode,
    )
    for p in caps:
        _write_rgb(tmp_path / "corrected" / p.name, matrices[p.stem].apply(cv2.imread(str(p))[..., ::-1].copy()))
    common = dict(checkpoint=str(ckpt), probabilities="float32", block=(128, 128), chunk=64, levels=1)
    run_segmentation(
        SegmentOptions(
            inputs=[str(root / "caps")],
            out=str(tmp_path / "stage"),
            colour=mode,
            annotations=str(root / "ann"),
            **common,
        )
    )
    run_segmentation(SegmentOptions(inputs=[str(tmp_path / "corrected")], out=str(tmp_path / "direct"), **common))
    a = zarr.open_group(str(tmp_path / "stage" / STORE_NAME), mode="r")
    b = zarr.open_group(str(tmp_path / "direct" / STORE_NAME), mode="r")
    for p in caps:
        assert np.abs(a[f"{p.stem}/probabilities/0"][:] - b[f"{p.stem}/probabilities/0"][:]).max() < 1e-5
        rec = a[p.stem].attrs["colour_calibration"]
        assert rec["mode"] == mode
        np.testing.assert_allclose(rec["matrix"], matrices[p.stem].matrix, atol=1e-9)
    if mode == "series":
        assert a["cap0"].attrs["colour_calibration"]["matrix"] == a["cap1"].attrs["colour_calibration"]["matrix"]
    else:
        assert a["cap0"].attrs["colour_calibration"]["matrix"] != a["cap1"].attrs["colour_calibration"]["matrix"]


@pytest.mark.ray
@pytest.mark.slow  # ~20 s; the matrix applied in the model actor is the per-image test's, the file's mapping the next
def test_a_saved_ccm_equals_segmenting_corrected_captures(ray_session, cast_captures, tmp_path):
    """``--ccm ccm.json`` (``lode calibrate colour``'s file) applies each section's saved matrix in the model actor."""
    from engine.calibrate.colour import save_matrices

    root, ckpt = cast_captures
    caps = sorted((root / "caps").glob("*.png"))
    card = ModelCard.model_validate(torch.load(ckpt, weights_only=True)["card"])
    matrices = fit_captures(caps, root / "ann", reference_from_card(card.reference_colors), "per-image")
    save_matrices(tmp_path / "ccm.json", matrices, "per-image")
    for p in caps:
        _write_rgb(tmp_path / "corrected" / p.name, matrices[p.stem].apply(cv2.imread(str(p))[..., ::-1].copy()))
    common = dict(checkpoint=str(ckpt), probabilities="float32", block=(128, 128), chunk=64, levels=1)
    run_segmentation(
        SegmentOptions(inputs=[str(root / "caps")], out=str(tmp_path / "ccm"), ccm=str(tmp_path / "ccm.json"), **common)
    )
    run_segmentation(SegmentOptions(inputs=[str(tmp_path / "corrected")], out=str(tmp_path / "direct"), **common))
    a = zarr.open_group(str(tmp_path / "ccm" / STORE_NAME), mode="r")
    b = zarr.open_group(str(tmp_path / "direct" / STORE_NAME), mode="r")
    for p in caps:
        assert np.abs(a[f"{p.stem}/probabilities/0"][:] - b[f"{p.stem}/probabilities/0"][:]).max() < 1e-5
        rec = a[p.stem].attrs["colour_calibration"]
        assert rec["mode"] == "saved" and rec["file"] == str(tmp_path / "ccm.json")
        np.testing.assert_allclose(rec["matrix"], matrices[p.stem].matrix, atol=1e-9)


def test_a_saved_ccm_covers_every_section_or_names_the_file(tmp_path):
    from engine.calibrate.colour import ColourMatrix, save_matrices
    from engine.segment.pipeline import saved_matrices

    one = ColourMatrix(np.vstack([np.eye(3) * 1.1, np.zeros((1, 3))]))
    other = ColourMatrix(np.vstack([np.eye(3) * 0.9, np.zeros((1, 3))]))
    save_matrices(tmp_path / "series.json", {"capA": one, "capB": one}, "series")
    got = saved_matrices(str(tmp_path / "series.json"), ["s1", "s2"])
    assert all(np.array_equal(m.matrix, one.matrix) for m in got.values()) and sorted(got) == ["s1", "s2"]
    save_matrices(tmp_path / "each.json", {"s1": one, "s2": other}, "per-image")
    assert np.array_equal(saved_matrices(str(tmp_path / "each.json"), ["s2"])["s2"].matrix, other.matrix)
    with pytest.raises(LodeInputError, match=r"each\.json.*no colour matrix for section\(s\) s3"):
        saved_matrices(str(tmp_path / "each.json"), ["s1", "s3"])


def test_colour_stage_needs_annotations(cast_captures, tmp_path):
    root, ckpt = cast_captures
    (tmp_path / "ann").mkdir()
    cfg = SegmentOptions(
        inputs=[str(root / "caps")],
        out=str(tmp_path / "o"),
        checkpoint=str(ckpt),
        colour="per-image",
        annotations=str(tmp_path / "ann"),
    )
    from engine.io.sources import discover
    from engine.segment.checkpoint import read_card
    from engine.segment.pipeline import colour_matrices

    with pytest.raises(LodeInputError, match="cap0.png"):
        colour_matrices(cfg, read_card(ckpt), discover(cfg.inputs))


@pytest.mark.ray
def test_annotated_colour_fits_only_the_annotated_sections(ray_session, cast_captures, tmp_path):
    """``colour="annotated"`` (``lode run``): each section with a mask gets its per-image matrix, the
    others none; a folder with no matching mask is no error."""
    import shutil

    from engine.io.sources import discover
    from engine.segment.checkpoint import read_card
    from engine.segment.pipeline import colour_matrices

    root, ckpt = cast_captures
    (tmp_path / "ann").mkdir()
    shutil.copy(root / "ann" / "cap1.png", tmp_path / "ann" / "cap1.png")
    cfg = SegmentOptions(
        inputs=[str(root / "caps")],
        out=str(tmp_path / "o"),
        checkpoint=str(ckpt),
        colour="annotated",
        annotations=str(tmp_path / "ann"),
    )
    card = read_card(ckpt)
    got = colour_matrices(cfg, card, discover(cfg.inputs))
    want = fit_captures(
        [root / "caps" / "cap1.png"], root / "ann", reference_from_card(card.reference_colors), "per-image"
    )
    assert set(got) == {"cap1"}
    np.testing.assert_allclose(got["cap1"].matrix, want["cap1"].matrix, atol=1e-9)
    (tmp_path / "ann" / "cap1.png").unlink()
    assert colour_matrices(cfg, card, discover(cfg.inputs)) == {}


def test_lode_calibrate_colour_writes_matrices_and_corrected_images(cast_captures, tmp_path, capsys):
    root, ckpt = cast_captures
    out = tmp_path / "ccm.json"
    assert (
        lode(
            [
                "calibrate",
                "colour",
                str(root / "caps"),
                "--annotations",
                str(root / "ann"),
                "--reference",
                str(ckpt),
                "--mode",
                "series",
                "--out",
                str(out),
                "--apply",
                str(tmp_path / "fixed"),
            ]
        )
        == 0
    )
    mats = load_matrices(out)
    assert set(mats) == {"cap0", "cap1"} and json.loads(out.read_text())["mode"] == "series"
    raw = cv2.imread(str(root / "caps" / "cap1.png"))[..., ::-1].copy()
    fixed = cv2.imread(str(tmp_path / "fixed" / "cap1.png"))[..., ::-1]
    assert np.array_equal(fixed, mats["cap1"].apply(raw))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["captures"] == 2
    for k in ("cap0", "cap1"):  # the yellow cast, against what the fitted matrix leaves
        assert printed["mean_delta_e_before"][k] == round(mats[k].info["mean_delta_e_before"], 4)
        assert printed["mean_delta_e_before"][k] > 2 * printed["mean_delta_e_fit"][k]


@pytest.fixture(scope="module")
def xpl_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("xplset")
    write_xpl_collection(root, n_train=1, n_test=1, size=(384, 512), seed=3)
    return root


def test_training_reader_stacks_registered_xpl(xpl_set):
    samples = load_split(xpl_set, "train")
    s = samples[0]
    assert s.channels == ["R", "G", "B", "XPL000", "XPL015", "XPL030", "XPL045", "XPL060", "XPL075"]
    assert s.image.shape == (384, 512, 9)
    truth = json.loads((xpl_set / "xpl_truth.json").read_text())[s.name]
    k = 4
    xpl = cv2.imread(str(xpl_set / "xpl" / "train" / s.name / "060.png"))
    ideal = cv2.cvtColor(cv2.warpAffine(xpl, np.array(truth["transforms"][k]), (512, 384)), cv2.COLOR_BGR2GRAY)
    inner = (slice(40, -40), slice(40, -40))
    assert np.abs(s.image[..., 3 + k][inner].astype(int) - ideal[inner]).mean() < 1.0


@pytest.mark.ray
def test_training_patches_carry_the_registered_xpl_channels(ray_session, xpl_set):
    from engine.train.source import augment_batch

    samples = load_split(xpl_set, "train")
    image = next((xpl_set / "imgs" / "train").iterdir())
    mask = next((xpl_set / "masks" / "train").iterdir())
    batch = {
        "image": np.array([str(image)]),
        "mask": np.array([str(mask)]),
        "y0": np.array([100]),
        "x0": np.array([150]),
        "seed": np.array([7]),
        "counts": np.zeros((1, 2), np.int64),
    }
    out = augment_batch(batch, 64, tuple(range(15)), None)
    assert out["image"].shape == (1, 9, 64, 64)
    assert np.array_equal(out["image"][0], np.moveaxis(samples[0].image[100:164, 150:214], -1, 0))


@pytest.mark.ray
@pytest.mark.slow
def test_segment_reads_xpl_folders(ray_session, xpl_set, tmp_path):
    samples = load_split(xpl_set, "test")
    classes = ClassSet.from_codes([0, 5, 6, 9, 12, 13])
    torch.manual_seed(0)
    ckpt = tmp_path / "xpl.pt"
    save_checkpoint(
        ckpt,
        build("unet", encoder="resnet18", in_channels=9, classes=len(classes)),
        ModelCard(
            arch="unet",
            encoder="resnet18",
            classes=classes.to_dicts(),
            in_channels=9,
            channels=samples[0].channels,
            mean=[0.5] * 9,
            std=[0.25] * 9,
            window=128,
        ),
    )
    out = tmp_path / "run"
    run_segmentation(
        SegmentOptions(
            inputs=[str(xpl_set / "imgs" / "test")],
            out=str(out),
            checkpoint=str(ckpt),
            xpl=str(xpl_set / "xpl" / "test"),
            block=(128, 256),
            chunk=64,
            levels=1,
        )
    )
    store = zarr.open_group(str(out / STORE_NAME), mode="r")
    name = samples[0].name
    stored = np.moveaxis(store[f"{name}/0"][:], 0, -1)
    assert stored.shape == (384, 512, 9)
    assert np.array_equal(stored[..., :3], samples[0].image[..., :3])
    # blocks warp their own window of each XPL capture: same transform, fixed-point rounding may differ by 1
    diff = np.abs(stored.astype(int) - samples[0].image)
    assert diff.max() <= 1 and diff.mean() < 0.05
    assert store[f"{name}/labels/minerals/0"].shape == (384, 512)
    partial = tmp_path / "xpl2" / name
    partial.mkdir(parents=True)
    for f in ("000.png", "015.png"):
        (partial / f).write_bytes((xpl_set / "xpl" / "test" / name / f).read_bytes())
    with pytest.raises(LodeInputError, match="XPL captures give channels"):
        run_segmentation(
            SegmentOptions(
                inputs=[str(xpl_set / "imgs" / "test")],
                out=str(tmp_path / "bad"),
                checkpoint=str(ckpt),
                xpl=str(tmp_path / "xpl2"),
            )
        )
    with pytest.raises(LodeInputError, match="no such folder"):
        run_segmentation(
            SegmentOptions(
                inputs=[str(xpl_set / "imgs" / "test")],
                out=str(tmp_path / "bad"),
                checkpoint=str(ckpt),
                xpl=str(xpl_set / "xpl" / "train"),
            )
        )


def test_registered_stack_helper_matches_reader(xpl_set):
    s = load_split(xpl_set, "test")[0]
    stacked, names = load_registered(s.image[..., :3].copy(), xpl_set / "xpl" / "test" / s.name)
    assert np.array_equal(stacked, s.image) and names == s.channels[3:]
