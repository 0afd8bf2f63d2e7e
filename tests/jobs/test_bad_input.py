"""Bad-input catalogue: every case fails through the ``lode`` command with exit code 2 and one
clear line naming the bad input, and loses nothing an earlier run wrote to the output.

A bad section among good ones fails alone while the others finish (segmentation: tests/jobs/
test_fault_tolerance.py), so the segmentation cases here give the bad file as the only input.
Engine-level twins live beside their engines (tests/segment/test_pipeline.py: grey image,
unreadable and truncated JPEG, missing input; tests/train/test_train.py: unknown class code)."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import xarray as xr

from engine.errors import LodeInputError
from jobs.cli import main as lode

RNG = np.random.default_rng(0)


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def earlier_output(tmp_path) -> Path:
    """An output folder holding an earlier run's results and manifest."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.bin").write_bytes(RNG.bytes(2048))
    (out / "manifest.json").write_text(json.dumps({"job": "earlier", "status": "complete", "run": 1}))
    return out


def fails_naming(argv: list[str], bad: Path | str, capsys, out: Path | None = None, reason: str = "") -> str:
    before = snapshot(out) if out else None
    assert lode(argv) == 2
    err = capsys.readouterr().err
    assert str(bad) in err, err
    assert reason.lower() in err.lower(), err
    assert "Traceback" not in err
    if out is not None:
        after = snapshot(out)
        for name, digest in before.items():
            if name == "manifest.json" and after[name] != digest:
                kept = json.loads((out / name).read_text())
                assert kept["status"] == "failed" and kept["previous"]["run"] == 1
            else:
                assert after.get(name) == digest, f"{name} was changed or lost"
    return err


def rgb(h: int = 96, w: int = 128) -> np.ndarray:
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


def image_folder(tmp_path: Path, name: str = "imgs") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), rgb())
    return folder


def segment_argv(inputs: list[Path], ckpt: Path, out: Path) -> list[str]:
    return ["segment", *map(str, inputs), "--checkpoint", str(ckpt), "--out", str(out)]


def test_truncated_jpeg(tmp_path, tiny_checkpoint, earlier_output, capsys):
    folder = image_folder(tmp_path)
    ok, buf = cv2.imencode(".jpg", rgb(300, 300))
    bad = folder / "cut.jpg"
    bad.write_bytes(buf.tobytes()[: len(buf) // 2])
    fails_naming(segment_argv([bad], tiny_checkpoint, earlier_output), bad, capsys, earlier_output, "truncated")


def test_truncated_png_tile_in_training_data(tmp_path, capsys):
    ds = lumenstone(tmp_path)
    bad = ds / "imgs" / "train" / "b.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) - 40])
    fails_naming(["train", str(ds), "--out", str(tmp_path / "model"), "--steps", "1"], bad, capsys, reason="truncated")


def test_zero_size_file(tmp_path, tiny_checkpoint, earlier_output, capsys):
    folder = image_folder(tmp_path)
    bad = folder / "empty.jpg"
    bad.touch()
    fails_naming(segment_argv([bad], tiny_checkpoint, earlier_output), bad, capsys, earlier_output, "empty")


def test_16_bit_image_where_rgb_is_expected(tmp_path, tiny_checkpoint, earlier_output, capsys):
    folder = image_folder(tmp_path)
    bad = folder / "deep.png"
    cv2.imwrite(str(bad), RNG.integers(0, 65535, (64, 64), dtype=np.uint16))
    fails_naming(segment_argv([bad], tiny_checkpoint, earlier_output), bad, capsys, earlier_output, "8-bit")


def test_grey_image_where_rgb_is_expected(tmp_path, tiny_checkpoint, earlier_output, capsys):
    folder = image_folder(tmp_path)
    bad = folder / "grey.png"
    cv2.imwrite(str(bad), RNG.integers(0, 255, (64, 64), dtype=np.uint8))
    fails_naming(segment_argv([bad], tiny_checkpoint, earlier_output), bad, capsys, earlier_output, "1 channels")


def lumenstone(tmp_path: Path, codes: tuple[int, ...] = (0, 1, 6)) -> Path:
    ds = tmp_path / "ds"
    for split in ("train", "test"):
        (ds / "imgs" / split).mkdir(parents=True)
        (ds / "masks" / split).mkdir(parents=True)
        for name in ("a", "b"):
            cv2.imwrite(str(ds / "imgs" / split / f"{name}.png"), rgb())
            cv2.imwrite(str(ds / "masks" / split / f"{name}.png"), RNG.choice(np.array(codes, np.uint8), (96, 128)))
    return ds


def test_mismatched_mask_size(tmp_path, earlier_output, capsys):
    ds = lumenstone(tmp_path)
    bad = ds / "masks" / "train" / "b.png"
    cv2.imwrite(str(bad), np.zeros((90, 128), np.uint8))
    fails_naming(
        ["train", str(ds), "--out", str(earlier_output), "--steps", "1"],
        bad,
        capsys,
        earlier_output,
        "does not match its image",
    )


def test_unknown_class_code(tmp_path, earlier_output, capsys):
    ds = lumenstone(tmp_path, codes=(0, 1, 6, 42))
    bad = ds / "masks" / "train" / "a.png"
    err = fails_naming(
        ["train", str(ds), "--out", str(earlier_output), "--steps", "1", "--classes", "0", "1", "6"],
        bad,
        capsys,
        earlier_output,
        "unknown class code",
    )
    assert "42" in err


def survey(tmp_path: Path, name: str, values: np.ndarray, crs: str | None = "EPSG:32633") -> Path:
    n, e = values.shape
    da = xr.DataArray(
        values,
        dims=("northing", "easting"),
        coords={"northing": 7_000_000 + 50.0 * np.arange(n), "easting": 500_000 + 50.0 * np.arange(e)},
        name="anomaly",
        attrs={"inclination": 70.0, "declination": 5.0, **({"crs": crs} if crs else {})},
    )
    path = tmp_path / name
    da.to_dataset().to_netcdf(path, engine="h5netcdf")
    return path


@pytest.mark.parametrize("bad_value, reason", [(np.inf, "infinite"), (np.nan, "no finite values")])
def test_nan_or_inf_grid(tmp_path, earlier_output, capsys, bad_value, reason):
    values = RNG.normal(0, 10, (64, 64))
    if np.isnan(bad_value):
        values[:] = np.nan
    else:
        values[10, 20] = bad_value
    bad = survey(tmp_path, "survey.nc", values)
    fails_naming(
        ["lineaments", str(bad), "--method", "classical", "--out", str(earlier_output)],
        bad,
        capsys,
        earlier_output,
        reason,
    )


def test_all_nodata_layer_in_a_prospectivity_stack(tmp_path, capsys):
    spec = region_with(tmp_path, lambda ds, name: ds.assign({name: ds[name] * np.nan}))
    fails_naming(
        ["prospect", "stack", "--spec", str(spec), "--out", str(tmp_path / "stack.zarr")],
        spec.parent / LAYER,
        capsys,
        reason="no valid cells",
    )


LAYER = "layer.nc"


def region_with(tmp_path: Path, edit) -> Path:
    """A one-layer stack spec whose netCDF layer is passed through ``edit(dataset, name)``."""
    region = tmp_path / "region"
    region.mkdir()
    values = RNG.normal(0, 1, (40, 40)).astype(np.float32)
    ds = xr.DataArray(
        values,
        dims=("northing", "easting"),
        coords={"northing": 6_000_000 + 25.0 * np.arange(40), "easting": 400_000 + 25.0 * np.arange(40)},
        name="mag",
        attrs={"crs": "EPSG:32633"},
    ).to_dataset()
    edit(ds, "mag").to_netcdf(region / LAYER, engine="scipy")
    grid = {"crs": "EPSG:32633", "cell_size": 25.0, "west": 400_000.0, "north": 6_001_000.0, "shape": [40, 40]}
    spec = region / "layers.json"
    spec.write_text(json.dumps({"grid": grid, "layers": [{"name": "mag", "path": LAYER, "kind": "continuous"}]}))
    return spec


def test_missing_crs(tmp_path, capsys):
    def strip_crs(ds, name):
        ds[name].attrs.pop("crs")
        return ds

    spec = region_with(tmp_path, strip_crs)
    earlier = tmp_path / "stack.zarr"
    earlier.mkdir()
    (earlier / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"run": 1}}')
    before = snapshot(earlier)
    fails_naming(
        ["prospect", "stack", "--spec", str(spec), "--out", str(earlier)], spec.parent / LAYER, capsys, reason="no CRS"
    )
    assert snapshot(earlier) == before


def test_empty_collection(tmp_path, tiny_checkpoint, earlier_output, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    fails_naming(
        ["stitch", str(empty), "--out", str(earlier_output / "p.zarr")],
        empty,
        capsys,
        earlier_output,
        "no <section>/tiles/",
    )
    fails_naming(
        segment_argv([empty], tiny_checkpoint, earlier_output), empty, capsys, earlier_output, "holds no images"
    )


def test_duplicate_section_ids(tmp_path, tiny_checkpoint, small_panorama, earlier_output, capsys):
    folder = image_folder(tmp_path)
    cv2.imwrite(str(folder / "good.jpg"), rgb())
    err = fails_naming(
        segment_argv([folder], tiny_checkpoint, earlier_output), folder, capsys, earlier_output, "duplicate section ids"
    )
    assert "good" in err
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_panorama, copy)
    err = fails_naming(
        segment_argv([small_panorama, copy], tiny_checkpoint, earlier_output),
        copy,
        capsys,
        earlier_output,
        "duplicate section ids",
    )
    assert "sec-a" in err


def test_input_errors_survive_pickling_through_ray():
    exc = pickle.loads(pickle.dumps(LodeInputError("/data/x.png", "truncated JPEG file")))
    assert (
        isinstance(exc, LodeInputError)
        and exc.source == "/data/x.png"
        and str(exc) == "/data/x.png: truncated JPEG file"
    )


@pytest.mark.slow
def test_an_input_error_raised_in_a_ray_train_worker_is_one_line(tmp_path, earlier_output, capsys):
    """Images smaller than the patch are found by the sampler inside Ray Data/Train workers."""
    ds = lumenstone(tmp_path)
    err = fails_naming(
        ["train", str(ds), "--out", str(earlier_output), "--steps", "1", "--patch", "256"],
        ds / "masks" / "train" / "a.png",
        capsys,
        earlier_output,
        "smaller than the 256 px patch",
    )
    assert len(err.strip().splitlines()) == 1, err
    manifest = json.loads((earlier_output / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "smaller than the 256 px patch" in manifest["error"]
    assert "\x1b[" not in manifest["error"] and "ray::" not in manifest["error"]


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["segment", "X", "--overlap", "1.5"], "--overlap"),
        (["segment", "X", "--batch-size", "0"], "--batch-size"),
        (["segment", "X", "--window", "0"], "--window"),
        (["segment", "X", "--block", "0", "0"], "--block"),
        (["segment"], "--inputs"),
        (["train", "X", "--steps", "0"], "--steps"),
    ],
)
def test_command_line_values_are_validated_like_config_files(tmp_path, capsys, argv, flag):
    out = tmp_path / "out"
    full = [a if a != "X" else str(tmp_path / "in") for a in argv]
    if len(argv) > 1:
        full += ["--out", str(out)] + (["--checkpoint", str(tmp_path / "m.pt")] if argv[0] == "segment" else [])
    assert lode(full) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "Traceback" not in err[0], err
    assert not any(tmp_path.rglob("*")), "a refused command wrote something"
