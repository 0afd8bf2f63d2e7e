"""Bad-input catalogue, survey grids and prospectivity stacks: ``lode prospect stack`` refuses inf,
duplicate layers, unknown spec keys and (without ``--allow-sparse``) a layer valid on under 5 % of
the grid; ``lode lineaments`` refuses inf, undeclared no-data sentinels and all-NaN grids before
its model loads or Ray starts, and warns once with the valid share of a holed grid."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from jobs.cli import main as lode
from tests.jobs.test_bad_input import earlier_output, fails_naming, survey  # noqa: F401 (a fixture)

CELL, WEST, NORTH, SIZE = 25.0, 400_000.0, 6_001_000.0, 40
CRS = "EPSG:32633"


def layer_file(folder: Path, name: str, values: np.ndarray) -> Path:
    """A netCDF layer on the stack grid's own cell centres (so aligning it is the identity)."""
    coords = {"northing": NORTH - (np.arange(SIZE) + 0.5) * CELL, "easting": WEST + (np.arange(SIZE) + 0.5) * CELL}
    path = folder / f"{name}.nc"
    xr.DataArray(
        values.astype(np.float32), dims=("northing", "easting"), coords=coords, name=name, attrs={"crs": CRS}
    ).to_netcdf(path, engine="scipy")
    return path


def region(tmp_path: Path, layers: dict[str, np.ndarray], edit=None) -> Path:
    """A stack spec of continuous layers named as the ``layers`` keys, passed through ``edit(spec)``."""
    folder = tmp_path / "region"
    folder.mkdir()
    rng = np.random.default_rng(1)
    spec = {"grid": {"shape": [SIZE, SIZE], "cell_size": CELL, "west": WEST, "north": NORTH, "crs": CRS}, "layers": []}
    for name, values in layers.items():
        values = rng.normal(0, 1, (SIZE, SIZE)) if values is None else values
        layer_file(folder, name, values)
        spec["layers"].append({"name": name, "path": f"{name}.nc", "kind": "continuous"})
    if edit:
        edit(spec)
    (folder / "layers.json").write_text(json.dumps(spec))
    return folder / "layers.json"


def stack_argv(spec: Path, out: Path, *extra: str) -> list[str]:
    return ["prospect", "stack", "--spec", str(spec), "--out", str(out), *extra]


def refused(spec: Path, bad: Path | str, capsys, earlier: Path, reason: str) -> str:
    out = earlier / "stack.zarr"
    err = fails_naming(stack_argv(spec, out), bad, capsys, earlier, reason)
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    return err


def test_inf_in_a_stack_layer(tmp_path, earlier_output, capsys):
    mag = np.random.default_rng(0).normal(0, 1, (SIZE, SIZE))
    mag[5, 7] = -np.inf
    spec = region(tmp_path, {"Cu": None, "mag": mag})
    err = refused(spec, spec.parent / "mag.nc", capsys, earlier_output, "1 infinite values")
    assert "'mag'" in err


def test_duplicate_layer_name(tmp_path, earlier_output, capsys):
    def rename(spec):
        spec["layers"][1]["name"] = "mag"

    spec = region(tmp_path, {"mag": None, "K": None}, rename)
    refused(spec, spec, capsys, earlier_output, "duplicate layer name 'mag' (layers 0 and 1)")


def test_duplicate_layer_path(tmp_path, earlier_output, capsys):
    """The same file under another name (and spelled differently) reads the same data twice."""

    def again(spec):
        spec["layers"].append({"name": "mag_copy", "path": "./mag.nc", "kind": "continuous"})

    spec = region(tmp_path, {"mag": None, "K": None}, again)
    err = refused(spec, spec.parent / "mag.nc", capsys, earlier_output, "duplicate layer")
    assert "'mag_copy' reads variable 'mag' of the same file as layer 'mag'" in err


@pytest.mark.parametrize(
    "level, key, allowed",
    [
        ("top", "colour", "grid, layers, deposits"),
        ("grid", "cellsize", "shape, cell_size, west, north, crs"),
        ("layer", "no_data", "name, path, kind, nodata, classes, clr_group, crs"),
    ],
)
def test_unknown_spec_key(tmp_path, earlier_output, capsys, level, key, allowed):
    def add(spec):
        {"top": spec, "grid": spec["grid"], "layer": spec["layers"][1]}[level][key] = 1

    spec = region(tmp_path, {"mag": None, "K": None}, add)
    err = refused(spec, spec, capsys, earlier_output, f"unknown key {key!r}")
    assert f"allowed: {allowed}" in err
    if level == "layer":
        assert "in layer 'K'" in err


def sparse_region(tmp_path: Path) -> tuple[Path, np.ndarray]:
    thin = np.full((SIZE, SIZE), np.nan)
    thin[10:18, 20:28] = np.random.default_rng(2).normal(0, 1, (8, 8))  # 64 of 1600 cells: 4 %
    return region(tmp_path, {"mag": None, "thin": thin}), np.isfinite(thin)


def test_sparse_layer_is_refused(tmp_path, earlier_output, capsys):
    spec, _ = sparse_region(tmp_path)
    refused(spec, spec.parent / "thin.nc", capsys, earlier_output, "'thin' is valid on 4.0 % of the stack's grid")


def test_sparse_layer_with_allow_sparse(tmp_path, capsys, caplog):
    spec, covered = sparse_region(tmp_path)
    out = tmp_path / "stack.zarr"
    with caplog.at_level(logging.WARNING, logger="engine.prospect.stack"):
        assert lode(stack_argv(spec, out, "--allow-sparse")) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{spec.parent / 'thin.nc'}: layer 'thin' is valid on 4.0 % of the stack's grid (under 5 %); "
        "stacked anyway (--allow-sparse)"
    ]
    root = zarr.open_group(out, mode="r")
    valid = np.asarray(root["valid"]) > 0
    np.testing.assert_array_equal(valid, covered)
    assert root.attrs["valid_fraction"] == pytest.approx(64 / 1600)
    assert [m["coverage"] for m in root.attrs["layers"]] == [1.0, pytest.approx(0.04)]
    assert np.isfinite(np.asarray(root["stack"])[:, valid]).all()


def test_allow_sparse_in_a_config_file(tmp_path):
    spec, _ = sparse_region(tmp_path)
    cfg = tmp_path / "stack.json"
    cfg.write_text(
        json.dumps({"action": "stack", "spec": str(spec), "out": str(tmp_path / "s.zarr"), "allow_sparse": True})
    )
    assert lode(["prospect", "--config", str(cfg)]) == 0
    assert zarr.open_group(tmp_path / "s.zarr", mode="r").attrs["valid_fraction"] == pytest.approx(0.04)


@pytest.fixture(scope="module")
def lineament_checkpoint(tmp_path_factory) -> Path:
    """A small untrained lineament U-Net (MobileNetV2 encoder, 64-cell window)."""
    import torch

    from engine.geophys.card import LineamentCard
    from engine.geophys.model import build_model, save_checkpoint

    torch.manual_seed(0)
    card = LineamentCard(encoder="mobilenet_v2", window=64)
    return save_checkpoint(tmp_path_factory.mktemp("lineaments") / "model.pt", build_model(card), card)


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the job gets as far as starting Ray."""

    def started(*a, **k):
        raise AssertionError("Ray was started before the grid was checked")

    monkeypatch.setattr("engine.runtime.init_ray", started)


def grid_values(edit) -> np.ndarray:
    values = np.random.default_rng(3).normal(0, 10, (64, 64))
    edit(values)
    return values


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda v: v.__setitem__((10, 20), np.inf), "1 infinite values"),
        (lambda v: v.fill(np.nan), "no finite values"),
        (lambda v: v.__setitem__((5, 5), 1e30), "1 cells beyond ±1e+15 (largest 1e+30)"),
    ],
    ids=["inf", "all-nan", "1e30"],
)
def test_unet_lineaments_refuse_a_bad_grid_before_ray(
    tmp_path, earlier_output, capsys, lineament_checkpoint, no_ray, edit, reason
):
    bad = survey(tmp_path, "survey.nc", grid_values(edit))
    fails_naming(
        ["lineaments", str(bad), "--model", str(lineament_checkpoint), "--out", str(earlier_output)],
        bad,
        capsys,
        earlier_output,
        reason,
    )
    assert not (earlier_output / "_inference").exists()


def test_classical_lineaments_refuse_a_no_data_sentinel(tmp_path, earlier_output, capsys):
    bad = survey(tmp_path, "survey.nc", grid_values(lambda v: v.__setitem__(np.s_[:3, :], -1e32)))
    fails_naming(
        ["lineaments", str(bad), "--method", "classical", "--out", str(earlier_output)],
        bad,
        capsys,
        earlier_output,
        "192 cells beyond ±1e+15 (largest 1e+32)",
    )


def holed(tmp_path: Path, share_nan: float) -> tuple[Path, float]:
    rng = np.random.default_rng(4)
    values = grid_values(lambda v: None)
    values[rng.random(values.shape) < share_nan] = np.nan
    return survey(tmp_path, "holed.nc", values), float(np.isfinite(values).mean())


def hole_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "engine.geophys.grid" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("method", ["classical", "unet"])
def test_a_holed_grid_warns_once_with_its_valid_share(tmp_path, caplog, lineament_checkpoint, method):
    grid, share = holed(tmp_path, 0.3)
    assert 0.65 < share < 0.75
    route = (
        ["--method", "classical"]
        if method == "classical"
        else ["--model", str(lineament_checkpoint), "--executor", "serial"]
    )
    with caplog.at_level(logging.WARNING, logger="engine.geophys.grid"):
        assert lode(["lineaments", str(grid), *route, "--out", str(tmp_path / "out")]) == 0
    expected = (
        f"grid {grid}: {100 * share:.1f} % of cells valid after masking NaN holes; lines are not traced through holes"
    )
    assert hole_warnings(caplog) == [expected]


def test_a_grid_with_few_holes_does_not_warn(tmp_path, caplog):
    grid, share = holed(tmp_path, 0.05)
    assert share > 0.9
    with caplog.at_level(logging.WARNING, logger="engine.geophys.grid"):
        assert lode(["lineaments", str(grid), "--method", "classical", "--out", str(tmp_path / "out")]) == 0
    assert hole_warnings(caplog) == []
