"""Every job takes object-store URIs for its inputs and outputs (moto's local S3): each job is run
once on local paths and once on ``s3://`` locations holding the same inputs, and what it wrote to
S3 must equal what it wrote locally (bytes; JSON up to paths and timings; arrays of .npz/netCDF).
Segmentation of OME-Zarr stores with resume, and analysis: tests/io/test_object_store.py."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import s3fs
import zarr

from jobs.cli import main as lode

RNG_SEED = 3


def _rgb(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(RNG_SEED)
    return cv2.resize(
        rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
    )


def stitch_inputs(root: Path) -> None:
    from engine.synth.captures import CaptureConfig, capture_grid, write_section

    write_section(
        root / "coll", "secA", capture_grid(None, CaptureConfig(frame_hw=(160, 220), seed=41, rows=2, cols=2))
    )


def evaluate_inputs(root: Path) -> None:
    from engine.classes import LUMENSTONE
    from engine.io.integrity import mark_complete
    from engine.io.ome import PyramidLayout, create_labels, write_block
    from engine.synth import SectionSpec, write_panorama

    store = root / "pred.zarr"
    layout = PyramidLayout((64, 64), chunk=32, levels=2)
    write_panorama(store, "s1", 64, 128, SectionSpec(seed=4, grain_diameter=16), layout)
    import zarr

    image = zarr.open_group(str(store), mode="r+")["s1"]
    truth = image["labels/truth/0"][:]
    pred = truth.copy()
    pred[:, :20] = 6
    labels = create_labels(image, "minerals", LUMENSTONE, layout)
    for x0 in (0, 64):
        write_block(labels, pred[:, x0 : x0 + 64], 0, x0, "label")
    mark_complete(labels)


def annotate_inputs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "img.png"), _rgb(64, 96))
    scribbles = np.full((64, 96), 255, np.uint8)
    scribbles[10:14, 5:40] = 1
    scribbles[40:44, 50:90] = 6
    cv2.imwrite(str(root / "scribbles.png"), scribbles)


def calibrate_inputs(root: Path) -> None:
    (root / "flat").mkdir(parents=True)
    yy, xx = np.mgrid[0:48, 0:64]
    vignette = 1 - 0.3 * (((yy - 24) / 24) ** 2 + ((xx - 32) / 32) ** 2)
    for i in range(3):
        frame = np.clip(200 * vignette + i, 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "flat" / f"f{i}.png"), np.dstack([frame] * 3))


def lineaments_inputs(root: Path) -> None:
    from engine.geophys.dataset import write_survey_files

    write_survey_files(root / "surveys", 1, size=64, seed=5)
    grid = next((root / "surveys").glob("*.nc"))
    grid.rename(root / "grid.nc")


def prospect_inputs(root: Path) -> None:
    from engine.prospect.stack import build_stack
    from engine.prospect.synth import synth_region, write_region

    region = write_region(synth_region(64, 0), root / "region")
    build_stack(Path(region) / "layers.json", root / "stack.zarr")


def config_inputs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "segment.yaml").write_text("inputs: [a.zarr]\nout: run1\ncheckpoint: m.pt\nblock: [256, 256]\n")


def bench_inputs(root: Path) -> None:
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "lineaments.json").write_text(json.dumps({"unet": {"f1_2": 0.9}, "classical": {"f1_2": 0.7}}))
    (root / "bench" / "bench_meta.json").write_text(json.dumps({"machine": "test machine", "runs": {}}))
    (root / "README.md").write_text("# x\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n")


def segment_inputs(root: Path) -> None:
    (root / "imgs").mkdir(parents=True)
    cv2.imwrite(str(root / "imgs" / "s1.png"), _rgb(128, 192))


def no_inputs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)


# job: (input maker, argv with {IN} and {OUT}, which tree the job writes: "out" or "in")
CASES: dict[str, tuple[Callable[[Path], None], list[str], str]] = {
    "stitch": (
        stitch_inputs,
        ["stitch", "{IN}/coll", "--out", "{OUT}/pano.zarr", "--shard", "256", "--no-lens", "--no-flat"],
        "out",
    ),
    "evaluate": (
        evaluate_inputs,
        ["evaluate", "--pred", "{IN}/pred.zarr", "--truth", "{IN}/pred.zarr", "--json", "{OUT}/evaluation.json"],
        "out",
    ),
    "annotate": (
        annotate_inputs,
        [
            "annotate",
            "expand",
            "--image",
            "{IN}/img.png",
            "--scribbles",
            "{IN}/scribbles.png",
            "--out",
            "{OUT}/labels.png",
        ],
        "out",
    ),
    "calibrate": (
        calibrate_inputs,
        ["calibrate", "flat", "{IN}/flat", "--degree", "2", "--out", "{OUT}/flat.npz"],
        "out",
    ),
    "lineaments": (
        lineaments_inputs,
        ["lineaments", "{IN}/grid.nc", "--method", "classical", "--out", "{OUT}/lin"],
        "out",
    ),
    "prospect": (
        prospect_inputs,
        [
            "prospect",
            "map",
            "--stack",
            "{IN}/stack.zarr",
            "--method",
            "pca",
            "--block",
            "64",
            "--out",
            "{OUT}/map.zarr",
        ],
        "out",
    ),
    "segment": (
        segment_inputs,
        ["segment", "{IN}/imgs", "--checkpoint", "{IN}/model.pt", "--out", "{OUT}/seg", "--block", "128", "128"],
        "out",
    ),
    "synth": (
        no_inputs,
        ["synth", "collection", "{OUT}/ds", "--train", "1", "--test", "1", "--size", "64", "96"],
        "out",
    ),
    "config": (config_inputs, ["config", "check", "segment", "{IN}/segment.yaml"], "none"),
    "bench": (
        bench_inputs,
        ["bench", "--report-only", "--only", "lineaments", "--out", "{IN}/bench", "--readme", "{IN}/README.md"],
        "in",
    ),
}


# the prospect round trip trains a model (~60 s on a loaded 2-core machine), the segmentation one runs a model
# actor twice (~30 s), the stitch one ~30 s (stitching on S3 is also the slow 3-node lode run, tests/jobs/test_run.py);
# the default run keeps the S3 round trip of every other job
SLOW = {"prospect", "segment", "stitch"}


def _normalise(value, numbers: bool = True):
    """JSON up to what differs between a local and an S3 run: paths, hashes of paths (fingerprints) and
    timings (and, for a job that is not bit-reproducible, numbers)."""
    skip = r"second|time|_s$|finished|started|fingerprint"
    if isinstance(value, dict):
        return {k: _normalise(v, numbers) for k, v in value.items() if not re.search(skip, k)}
    if isinstance(value, list):
        return [_normalise(v, numbers) for v in value]
    if isinstance(value, str) and "/" in value:
        return "<path>"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not numbers:
        return "<number>"
    return value


def _same(a: Path, b: Path, numbers: bool = True) -> bool:
    if a.suffix in (".json", ".geojson"):
        return _normalise(json.loads(a.read_text()), numbers) == _normalise(json.loads(b.read_text()), numbers)
    if a.suffix == ".npz":
        x, y = np.load(a), np.load(b)
        return sorted(x) == sorted(y) and all(np.array_equal(x[k], y[k]) for k in x)
    if a.suffix == ".nc":
        import xarray as xr

        return xr.load_dataset(a).equals(xr.load_dataset(b))
    return a.read_bytes() == b.read_bytes()


def _tree(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.ray
@pytest.mark.parametrize("job", [pytest.param(j, marks=pytest.mark.slow) if j in SLOW else j for j in sorted(CASES)])
def test_job_reads_and_writes_s3_like_local_paths(job, s3, ray_session, tmp_path, monkeypatch, request):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    make, argv, written = CASES[job]
    local_in, local_out = tmp_path / "in", tmp_path / "out"
    make(local_in)
    if job == "segment":
        shutil.copy(request.getfixturevalue("tiny_checkpoint"), local_in / "model.pt")
    local_out.mkdir()
    bucket = s3fs.S3FileSystem()
    bucket.put(str(local_in), f"lode-test/{job}/in", recursive=True)

    def fill(root_in: str, root_out: str) -> list[str]:
        return [a.replace("{IN}", root_in).replace("{OUT}", root_out) for a in argv]

    assert lode(fill(str(local_in), str(local_out))) == 0
    assert lode(fill(f"s3://lode-test/{job}/in", f"s3://lode-test/{job}/out")) == 0
    if written == "none":
        return
    got_root = tmp_path / "from_s3"
    bucket.invalidate_cache()
    bucket.get(f"lode-test/{job}/{written}/", str(got_root), recursive=True)
    want, got = _tree(local_in if written == "in" else local_out), _tree(got_root)
    assert want and sorted(want) == sorted(got), (sorted(want), sorted(got))
    assert any(name.endswith("manifest.json") for name in got) or job == "evaluate"  # it has no --out
    if job == "stitch":  # stitching is not bit-reproducible from run to run, even on local paths
        want = {k: v for k, v in want.items() if "pano.zarr/" not in k}
        a, b = (zarr.open_group(str(root / "pano.zarr"), mode="r")["secA"] for root in (local_out, got_root))
        for level in ("0", "1"):
            x, y = a[level][:].astype(int), b[level][:].astype(int)
            assert x.shape == y.shape and np.abs(x - y).mean() < 0.5, level
    different = [name for name in want if not _same(want[name], got[name], numbers=job != "stitch")]
    assert not different, different


def test_bad_uri_input_names_it(s3, tmp_path, capsys):
    missing = "s3://lode-test/nowhere/img.png"
    assert (
        lode(["annotate", "expand", "--image", missing, "--scribbles", missing, "--out", str(tmp_path / "l.png")]) == 2
    )
    err = capsys.readouterr().err
    assert missing in err and "Traceback" not in err
    assert not (tmp_path / "l.png").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_train_reads_a_collection_from_s3_and_writes_the_model_there(s3, ray_session, tmp_path, monkeypatch):
    from engine.segment.checkpoint import read_card
    from engine.synth import write_lumenstone

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    write_lumenstone(tmp_path / "ds", 2, 1, (96, 128), seed=1, grain_diameter=20)
    s3fs.S3FileSystem().put(str(tmp_path / "ds"), "lode-test/train/ds", recursive=True)
    out = "s3://lode-test/train/model"
    assert (
        lode(
            [
                "train",
                "s3://lode-test/train/ds",
                "--out",
                out,
                "--steps",
                "2",
                "--patch",
                "64",
                "--batch-size",
                "2",
                "--window",
                "64",
                "--streams",
                "1",
            ]
        )
        == 0
    )
    card = read_card(f"{out}/model.pt")
    assert card.window == 64 and card.in_channels == 3
    assert json.loads(s3fs.S3FileSystem().cat_file("lode-test/train/model/manifest.json"))["status"] == "complete"
