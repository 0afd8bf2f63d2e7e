"""Bad-input catalogue, every job: a bad flag value, an existing file where a job writes a folder
(and the reverse), a missing input, a damaged model checkpoint, a resume from another class set or
a damaged training state, an unknown truth code. Each fails through the ``lode`` command with exit
code 2 and one line naming the input, before Ray starts, and changes nothing already in the output."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from jobs.cli import load_job
from jobs.cli import main as lode
from tests.jobs.test_bad_input import (  # noqa: F401
    RNG,
    earlier_output,
    fails_naming,
    image_folder,
    lumenstone,
    region_with,
    segment_argv,
    snapshot,
    survey,
)


@pytest.fixture(autouse=True)
def ray_must_not_start(monkeypatch):
    """Every case here is refused before a job starts Ray."""

    def refuse(*args, **kwargs):
        pytest.fail("the job started Ray before refusing its input")

    monkeypatch.setattr("engine.runtime.init_ray", refuse)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_pixel_size_must_be_a_positive_number(small_panorama, tmp_path, capsys, value):
    out = tmp_path / "analysis"
    assert (
        lode(
            [
                "analyze",
                str(small_panorama),
                "--labels",
                "truth",
                "--executor",
                "serial",
                "--out",
                str(out),
                "--pixel-size-um",
                value,
            ]
        )
        == 2
    )
    line = one_line(capsys.readouterr().err)
    assert "--pixel-size-um" in line and "positive" in line
    assert not any(tmp_path.iterdir()), "a refused run wrote something"


# Each job that writes a folder (a zarr store too), given an existing file there. IN stands for an
# input that is never read: the output is checked before any work.
FOLDER_OUTPUTS = {
    "segment": ["segment", "IN", "--checkpoint", "IN", "--out", "OUT"],
    "analyze": ["analyze", "IN", "--out", "OUT"],
    "train": ["train", "IN", "--out", "OUT"],
    "stitch": ["stitch", "IN", "--out", "OUT"],
    "lineaments grid": ["lineaments", "IN", "--out", "OUT"],
    "lineaments train": ["lineaments", "train", "--data", "IN", "--out", "OUT"],
    "prospect stack": ["prospect", "stack", "--spec", "IN", "--out", "OUT"],
    "prospect map": ["prospect", "map", "--stack", "IN", "--method", "pca", "--out", "OUT"],
    "prospect evaluate": ["prospect", "evaluate", "--map", "IN", "--deposits", "IN", "--out", "OUT"],
    "prospect run": ["prospect", "run", "--region", "IN", "--out", "OUT"],
    "calibrate colour --apply": [
        "calibrate",
        "colour",
        "IN",
        "--annotations",
        "IN",
        "--reference",
        "IN",
        "--out",
        "IN.json",
        "--apply",
        "OUT",
    ],
    "annotate uncertain": ["annotate", "uncertain", "IN", "--out", "OUT"],
    "synth collection": ["synth", "collection", "OUT"],
    "synth panorama": ["synth", "panorama", "OUT"],
    "synth survey": ["synth", "survey", "OUT"],
    "synth region": ["synth", "region", "OUT"],
}
# Each job that writes a file, given an existing folder there.
FILE_OUTPUTS = {
    "evaluate --json": ["evaluate", "--pred", "IN", "--truth", "IN", "--json", "OUT"],
    "calibrate lens": ["calibrate", "lens", "IN", "--out", "OUT"],
    "calibrate flat": ["calibrate", "flat", "IN", "--out", "OUT"],
    "calibrate colour": ["calibrate", "colour", "IN", "--annotations", "IN", "--reference", "IN", "--out", "OUT"],
    "annotate expand": ["annotate", "expand", "--image", "IN", "--scribbles", "IN", "--out", "OUT"],
    "lineaments evaluate": ["lineaments", "evaluate", "IN", "IN", "--out", "OUT"],
    "prospect train": ["prospect", "train", "--stack", "IN", "--out", "OUT"],
    "prospect map --geotiff": [
        "prospect",
        "map",
        "--stack",
        "IN",
        "--method",
        "pca",
        "--out",
        "IN.zarr",
        "--geotiff",
        "OUT",
    ],
}


def refused_before_work(argv: list[str], taken, tmp_path, capsys, monkeypatch, reason: str) -> None:
    started = []
    monkeypatch.setattr(load_job(argv[0]), "run", lambda cfg: started.append(cfg))
    before = snapshot(tmp_path), sorted(tmp_path.rglob("*"))
    full = [str(taken) if a == "OUT" else str(tmp_path / a) if a.startswith("IN") else a for a in argv]
    assert lode(full) == 2
    line = one_line(capsys.readouterr().err)
    assert str(taken) in line and reason in line, line
    assert not started, "the job body ran"
    assert (snapshot(tmp_path), sorted(tmp_path.rglob("*"))) == before, "a refused run changed or wrote something"


@pytest.mark.parametrize("job", list(FOLDER_OUTPUTS))
def test_an_existing_file_where_a_folder_is_written(job, tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_bytes(RNG.bytes(512))
    refused_before_work(FOLDER_OUTPUTS[job], taken, tmp_path, capsys, monkeypatch, "exists and is not a folder")


@pytest.mark.parametrize("job", list(FILE_OUTPUTS))
def test_an_existing_folder_where_a_file_is_written(job, tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "kept.bin").write_bytes(RNG.bytes(512))
    refused_before_work(FILE_OUTPUTS[job], taken, tmp_path, capsys, monkeypatch, "is a folder, not a file")


def test_a_file_where_the_output_folder_of_a_file_should_be(tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_bytes(RNG.bytes(512))
    refused_before_work(
        ["evaluate", "--pred", "IN", "--truth", "IN", "--json", "OUT"],
        taken / "evaluation.json",
        tmp_path,
        capsys,
        monkeypatch,
        f"{taken} is a file, not a folder",
    )


def test_an_existing_output_file_is_replaced_not_refused(tmp_path, capsys):
    """The probe refuses only the wrong kind: a file output that exists is written again."""
    ann, caps = tmp_path / "ann", image_folder(tmp_path, "caps")
    ann.mkdir()
    img = cv2.imread(str(caps / "good.png"))
    mask = np.full(img.shape[:2], 255, np.uint8)
    mask[:48, :64], mask[48:, 64:] = 1, 6
    cv2.imwrite(str(ann / "good.png"), mask)
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"1": [0.6, 0.5, 0.4], "6": [0.3, 0.3, 0.3]}))
    out = tmp_path / "matrices.json"
    out.write_text("earlier")
    assert (
        lode(
            [
                "calibrate",
                "colour",
                str(caps),
                "--annotations",
                str(ann),
                "--reference",
                str(reference),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "good" in json.loads(out.read_text())["matrices"]


def test_a_missing_capture_folder_is_named_not_the_annotations(tmp_path, capsys):
    ann = tmp_path / "ann"
    ann.mkdir()
    cv2.imwrite(str(ann / "good.png"), np.full((96, 128), 255, np.uint8))
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"1": [0.6, 0.5, 0.4]}))
    missing = tmp_path / "captures"
    out = tmp_path / "matrices.json"
    err = fails_naming(
        [
            "calibrate",
            "colour",
            str(missing),
            "--annotations",
            str(ann),
            "--reference",
            str(reference),
            "--out",
            str(out),
        ],
        missing,
        capsys,
        reason="no such capture",
    )
    assert str(ann) not in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann", "ref.json"], "a refused run wrote something"


# -- damaged model checkpoints ------------------------------------------------------------------


def garbage(path):
    path.write_bytes(RNG.bytes(4096))


def plain_pickle(path):
    path.write_bytes(pickle.dumps({"state_dict": {"w": [1.0, 2.0]}, "card": {"arch": "unet"}}))


def wrong_keys(path):
    torch.save({"weights": torch.zeros(3), "meta": {"name": "x"}}, path)


BAD_CHECKPOINTS = {
    "garbage bytes": (garbage, "not a torch zip archive"),
    "a pickle, not a torch zip": (plain_pickle, "not a torch zip archive"),
    "a torch dict of other keys": (wrong_keys, "entry"),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from engine.prospect.stack import build_stack

    spec = region_with(tmp_path_factory.mktemp("region"), lambda ds, name: ds)
    return build_stack(spec, spec.parent / "stack.zarr")


def bad_model_argv(job: str, model, tmp_path, tiny_checkpoint, stack, out) -> list[str]:
    if job == "segment":
        return segment_argv([image_folder(tmp_path)], model, out)
    if job == "lineaments":
        grid = survey(tmp_path, "survey.nc", RNG.normal(0, 10, (64, 64)))
        return ["lineaments", str(grid), "--model", str(model), "--out", str(out)]
    return [
        "prospect",
        "map",
        "--stack",
        str(stack),
        "--method",
        "mae",
        "--model",
        str(model),
        "--out",
        str(out / "map.zarr"),
    ]


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
@pytest.mark.parametrize("job", ["segment", "lineaments", "prospect map"])
def test_a_damaged_model_checkpoint(job, kind, tmp_path, tiny_checkpoint, stack, earlier_output, capsys):
    make, reason = BAD_CHECKPOINTS[kind]
    model = tmp_path / "model.pt"
    make(model)
    err = fails_naming(
        bad_model_argv(job, model, tmp_path, tiny_checkpoint, stack, earlier_output),
        model,
        capsys,
        earlier_output,
        reason,
    )
    line = one_line(err)
    assert "not a" in line and "checkpoint" in line
    assert "weights_only" not in line and "\x1b" not in line


def _damaged_weights(path: Path, damage: str) -> None:
    """Rewrite a checkpoint's weights in place, its card untouched."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    sd = blob["state_dict"]
    if damage == "missing tensor":
        sd.pop(sorted(k for k in sd if k.endswith("weight"))[2])
    else:
        next(v for k, v in sorted(sd.items()) if v.is_floating_point()).fill_(float("nan"))
    torch.save(blob, path)


@pytest.mark.parametrize("damage,reason", [("missing tensor", "1 tensor(s) missing"), ("NaN weights", "NaN")])
@pytest.mark.parametrize("job", ["lineaments", "prospect map"])
def test_an_intact_card_over_damaged_weights(job, damage, reason, tmp_path, stack, earlier_output, capsys):
    """The whole checkpoint is checked before Ray starts (a child process loads every tensor and
    runs one blank window), not only its card."""
    if job == "lineaments":
        from engine.geophys.card import LineamentCard
        from engine.geophys.model import build_model, save_checkpoint

        card = LineamentCard(encoder="mobilenet_v2", window=64)
        torch.manual_seed(0)
        model = save_checkpoint(tmp_path / "model.pt", build_model(card), card)
        argv = bad_model_argv(job, model, tmp_path, None, stack, earlier_output)
    else:
        from engine.nets import build
        from engine.prospect.stack import open_stack
        from engine.prospect.train import default_config, save_checkpoint

        channels = open_stack(stack).channels
        model = save_checkpoint(
            tmp_path / "model.pt", build("cae", **default_config("cae", len(channels))), "cae", channels
        )
        argv = [
            "prospect",
            "map",
            "--stack",
            str(stack),
            "--method",
            "cae",
            "--model",
            str(model),
            "--out",
            str(earlier_output / "map.zarr"),
        ]
    _damaged_weights(model, damage)
    one_line(fails_naming(argv, model, capsys, earlier_output, reason))


# -- training: resume and class codes ------------------------------------------------------------


@pytest.fixture(scope="module")
def resume_folder(tmp_path_factory):
    """A training checkpoint folder (model.pt + state.pt at epoch 0) of a model over classes 0 and 1;
    its model.pt in the older form without a traced program (tracing costs seconds)."""
    from engine.classes import ClassSet
    from engine.nets import build
    from engine.segment.checkpoint import ModelCard

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("run") / "last"
    folder.mkdir()
    card = ModelCard(
        arch="unet",
        encoder="resnet18",
        classes=ClassSet.from_codes([0, 1]).to_dicts(),
        mean=[0.5] * 3,
        std=[0.25] * 3,
        window=64,
        overlap=0.25,
    )
    torch.save(
        {
            "state_dict": build("unet", encoder="resnet18", in_channels=3, classes=2).state_dict(),
            "card": card.model_dump(),
        },
        folder / "model.pt",
    )
    torch.save({"epoch": 0, "history": []}, folder / "state.pt")
    return folder


def resume_argv(ds, out, resume, *extra: str) -> list[str]:
    return [
        "train",
        str(ds),
        "--out",
        str(out),
        "--resume",
        str(resume),
        "--arch",
        "unet",
        "--steps",
        "2",
        "--epochs",
        "2",
        *extra,
    ]


def test_resume_with_another_class_set_in_the_data(tmp_path, resume_folder, earlier_output, capsys):
    ds = lumenstone(tmp_path, codes=(0, 1, 6))
    err = fails_naming(
        resume_argv(ds, earlier_output, resume_folder),
        resume_folder / "model.pt",
        capsys,
        earlier_output,
        "class set [0, 1] of the checkpoint differs from the data's",
    )
    assert "code(s) 6 " in one_line(err)


def test_resume_with_other_classes_asked_for(tmp_path, resume_folder, earlier_output, capsys):
    ds = lumenstone(tmp_path, codes=(0, 1))
    fails_naming(
        resume_argv(ds, earlier_output, resume_folder, "--classes", "0", "1", "6"),
        resume_folder / "model.pt",
        capsys,
        earlier_output,
        "differs from --classes [0, 1, 6]",
    )


def test_resume_from_a_garbage_training_state(tmp_path, resume_folder, earlier_output, capsys):
    ds = lumenstone(tmp_path, codes=(0, 1))
    folder = tmp_path / "last"
    folder.mkdir()
    (folder / "model.pt").write_bytes((resume_folder / "model.pt").read_bytes())
    garbage(folder / "state.pt")
    err = fails_naming(
        resume_argv(ds, earlier_output, folder),
        folder / "state.pt",
        capsys,
        earlier_output,
        "not a Lode training state (unreadable torch file",
    )
    assert "weights_only" not in one_line(err)


@pytest.fixture(scope="module")
def scored_store(tmp_path_factory):
    """One complete section whose prediction equals its truth; the truth also as a mask PNG."""
    from engine.classes import LUMENSTONE
    from engine.io.integrity import mark_complete
    from engine.io.ome import PyramidLayout, create_labels, write_block
    from engine.synth import SectionSpec, write_panorama

    root = tmp_path_factory.mktemp("scored")
    layout = PyramidLayout((128, 128), chunk=64, levels=1)
    img = write_panorama(root / "lode.ome.zarr", "sec-a", 96, 128, SectionSpec(seed=3, grain_diameter=20), layout)
    truth = np.asarray(img["labels/truth/0"][:])
    lab = create_labels(img, "minerals", LUMENSTONE, layout)
    write_block(lab, truth, 0, 0, "label")
    mark_complete(lab)
    return root / "lode.ome.zarr", truth


def test_evaluate_refuses_an_unknown_truth_code(tmp_path, scored_store, earlier_output, capsys):
    store, truth = scored_store
    masks = tmp_path / "masks"
    masks.mkdir()
    bad = masks / "sec-a.png"
    mask = truth.copy()
    mask[10:30, 10:30] = 200
    cv2.imwrite(str(bad), mask)
    err = fails_naming(
        ["evaluate", "--pred", str(store), "--truth", str(masks), "--json", str(earlier_output / "evaluation.json")],
        bad,
        capsys,
        earlier_output,
        "unknown class code 200",
    )
    one_line(err)
    assert not (earlier_output / "evaluation.json").exists()


# -- a missing main input ------------------------------------------------------------------------

MISSING = {
    "segment": (lambda m, ck: segment_argv([m], ck, "OUT"), ""),
    "segment --checkpoint": (
        lambda m, ck: ["segment", "IMAGES", "--checkpoint", str(m), "--out", "OUT"],
        "checkpoint not found",
    ),
    "analyze": (lambda m, ck: ["analyze", str(m), "--executor", "serial", "--out", "OUT"], ""),
    "evaluate --pred": (lambda m, ck: ["evaluate", "--pred", str(m), "--truth", "IMAGES", "--json", "OUT/e.json"], ""),
    "evaluate --truth": (
        lambda m, ck: ["evaluate", "--pred", "STORE", "--truth", str(m), "--json", "OUT/e.json"],
        "not found",
    ),
    "stitch": (lambda m, ck: ["stitch", str(m), "--out", "OUT/p.zarr"], ""),
    "lineaments": (lambda m, ck: ["lineaments", str(m), "--method", "classical", "--out", "OUT"], ""),
    "lineaments --model": (lambda m, ck: ["lineaments", "GRID", "--model", str(m), "--out", "OUT"], ""),
    "prospect stack": (lambda m, ck: ["prospect", "stack", "--spec", str(m), "--out", "OUT/s.zarr"], ""),
    "prospect map --stack": (
        lambda m, ck: ["prospect", "map", "--stack", str(m), "--method", "pca", "--out", "OUT/m.zarr"],
        "",
    ),
    "prospect map --model": (
        lambda m, ck: [
            "prospect",
            "map",
            "--stack",
            "STACK",
            "--method",
            "mae",
            "--model",
            str(m),
            "--out",
            "OUT/m.zarr",
        ],
        "not found",
    ),
    "calibrate lens": (lambda m, ck: ["calibrate", "lens", str(m), "--out", "OUT/lens.json"], "no such folder"),
    "calibrate flat": (lambda m, ck: ["calibrate", "flat", str(m), "--out", "OUT/flat.npz"], "no such folder"),
    "train": (lambda m, ck: ["train", str(m), "--out", "OUT", "--steps", "1"], ""),
    "annotate expand": (
        lambda m, ck: ["annotate", "expand", "--image", str(m), "--scribbles", str(m), "--out", "OUT/l.png"],
        "no such image file",
    ),
    "annotate uncertain": (lambda m, ck: ["annotate", "uncertain", str(m), "--out", "OUT"], ""),
}


@pytest.mark.parametrize("job", list(MISSING))
def test_a_missing_input(job, tmp_path, tiny_checkpoint, stack, scored_store, earlier_output, capsys):
    make, reason = MISSING[job]
    missing = tmp_path / "nowhere" / "input.nc"
    grid = survey(tmp_path, "survey.nc", RNG.normal(0, 10, (64, 64)))
    present = {
        "OUT": str(earlier_output),
        "IMAGES": str(image_folder(tmp_path)),
        "STORE": str(scored_store[0]),
        "GRID": str(grid),
        "STACK": str(stack),
    }
    argv = [
        next((a.replace(k, v) for k, v in present.items() if a.startswith(k)), a)
        for a in make(missing, tiny_checkpoint)
    ]
    err = fails_naming(argv, missing, capsys, earlier_output, reason)
    one_line(err)
