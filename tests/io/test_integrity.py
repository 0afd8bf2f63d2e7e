"""Incomplete and damaged stores are refused by their readers, never measured as if whole."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from engine.analyze.evaluate import evaluate_store
from engine.analyze.metrics import SegmentationScores
from engine.analyze.sections import open_sections
from engine.classes import LUMENSTONE
from engine.errors import LodeInputError
from engine.io.integrity import is_complete, missing_shards, read_checked
from engine.io.ome import VOID, PyramidLayout, create_image, create_labels, write_block
from jobs.cli import main as lode

BLOCK = 64


def _labels(seed: int, shape=(128, 192)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.choice([0, 1, 2, 6], size=(shape[0] // 16, shape[1] // 16))
    return np.kron(coarse, np.ones((16, 16), np.uint8)).astype(np.uint8)


def _store(path: Path, truth: np.ndarray, written: set[tuple[int, int]] | None, complete: bool) -> tuple[Path, Path]:
    """A prediction store (section ``s1``; only ``written`` blocks, all when None) and a mask folder."""
    from engine.io.integrity import mark_complete

    root = zarr.open_group(str(path / "pred.zarr"), mode="w")
    layout = PyramidLayout((BLOCK, BLOCK), chunk=32, levels=1)
    img = create_image(root, "s1", (3, *truth.shape), layout)
    lab = create_labels(img, "minerals", LUMENSTONE, layout)
    pred = truth.copy()
    pred[:, :24] = 6
    for y0 in range(0, truth.shape[0], BLOCK):
        for x0 in range(0, truth.shape[1], BLOCK):
            if written is None or (y0, x0) in written:
                write_block(lab, pred[y0 : y0 + BLOCK, x0 : x0 + BLOCK], y0, x0, "label")
    if complete:
        mark_complete(lab)
        mark_complete(img)
    masks = path / "masks"
    masks.mkdir()
    import cv2

    cv2.imwrite(str(masks / "s1.png"), truth)
    return path / "pred.zarr", masks


def test_unwritten_labels_read_as_void_and_are_listed_missing(tmp_path):
    truth = _labels(1)
    store, _ = _store(tmp_path, truth, {(0, 0)}, complete=False)
    arr = zarr.open_group(str(store))["s1/labels/minerals/0"]
    assert (arr[64:, :] == VOID).all() and (arr[:64, :64] != VOID).all()
    assert sorted(missing_shards(arr)) == [(0, 64), (0, 128), (64, 0), (64, 64), (64, 128)]
    meta = zarr.open_group(str(store))["s1/labels/minerals"].attrs["ome"]["image-label"]
    assert {"label-value": VOID, "name": "no data"} in meta["properties"]
    with pytest.raises(LodeInputError, match="reserved"):
        create_labels(
            zarr.open_group(str(store))["s1"],
            "bad",
            type(LUMENSTONE)([*LUMENSTONE.classes, type(LUMENSTONE.classes[0])(VOID, "void", (0, 0, 0))], name="x"),
            PyramidLayout((BLOCK, BLOCK), chunk=32, levels=1),
        )


def test_incomplete_store_is_refused_and_allow_incomplete_scores_only_written_blocks(tmp_path):
    truth = _labels(2)
    written = {(0, 0), (64, 128)}
    store, masks = _store(tmp_path, truth, written, complete=False)
    with pytest.raises(LodeInputError, match=r"s1: incomplete: 4 block\(s\) never written at \(y, x\) \(0, 64\)"):
        evaluate_store(store, masks)
    with pytest.raises(LodeInputError, match="incomplete"):
        open_sections(store)
    incomplete: dict[str, int] = {}
    total, _ = evaluate_store(store, masks, allow_incomplete=True, incomplete=incomplete)
    assert incomplete == {"s1": 4}
    pred = truth.copy()
    pred[:, :24] = 6
    keep = np.zeros(truth.shape, bool)
    for y0, x0 in written:
        keep[y0 : y0 + BLOCK, x0 : x0 + BLOCK] = True
    want = SegmentationScores.empty(total.codes)
    want.add(truth[keep][None], pred[keep][None])
    np.testing.assert_array_equal(total.confusion, want.confusion)
    assert open_sections(store, allow_incomplete=True)[0].missing == ((0, 64), (0, 128), (64, 0), (64, 64))


def test_evaluate_job_refuses_an_incomplete_store_in_one_line_and_says_what_it_left_out(tmp_path, capsys):
    store, masks = _store(tmp_path, _labels(3), {(0, 0)}, complete=False)
    out = tmp_path / "e.json"
    assert lode(["evaluate", "--pred", str(store), "--truth", str(masks), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s1: incomplete" in err[0] and str(store) in err[0]
    assert not out.exists()
    assert (
        lode(["evaluate", "--pred", str(store), "--truth", str(masks), "--json", str(out), "--allow-incomplete"]) == 0
    )
    assert "INCOMPLETE s1: 5 block(s)" in capsys.readouterr().out
    assert '"incomplete_sections": {\n  "s1": 5' in out.read_text()


def test_a_deleted_shard_of_a_complete_store_is_damage(tmp_path):
    store, masks = _store(tmp_path, _labels(4), None, complete=True)
    assert is_complete(zarr.open_group(str(store))["s1"])
    evaluate_store(store, masks)
    (store / "s1/labels/minerals/0/c/1/2").unlink()
    for read in (
        lambda: evaluate_store(store, masks),
        lambda: open_sections(store),
        lambda: open_sections(store, allow_incomplete=True),
    ):
        with pytest.raises(LodeInputError, match=r"damaged: 1 shard\(s\) of .*minerals/0 missing .* \(64, 128\)"):
            read()


def test_a_flipped_byte_inside_a_chunk_is_reported_with_the_array_and_region(tmp_path):
    store, masks = _store(tmp_path, _labels(5), None, complete=True)
    shard = store / "s1/labels/minerals/0/c/0/1"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x5A
    shard.write_bytes(bytes(data))
    with pytest.raises(
        LodeInputError, match=r"pred.zarr: damaged chunk of s1/labels/minerals/0 in region \[0:None, 0:None\]"
    ):
        evaluate_store(store, masks)
    arr = zarr.open_group(str(store))["s1/labels/minerals/0"]
    np.testing.assert_array_equal(read_checked(arr, (slice(0, 64), slice(128, 192)), "x"), arr[0:64, 128:192])
    with pytest.raises(LodeInputError, match=r"damaged chunk of s1/labels/minerals/0 in region \[0:64, 64:128\]"):
        read_checked(arr, (slice(0, 64), slice(64, 128)), str(store))


@pytest.mark.slow
def test_a_killed_segmentation_is_incomplete_until_its_rerun_finishes(
    tmp_path, ray_session, small_panorama, tiny_checkpoint
):
    from engine.segment.pipeline import STORE_NAME, SegmentOptions, run_segmentation

    cfg = SegmentOptions(
        inputs=[str(small_panorama)],
        out=str(tmp_path / "run"),
        checkpoint=str(tiny_checkpoint),
        block=(128, 128),
        max_blocks=5,
    )
    run_segmentation(cfg)
    store = tmp_path / "run" / STORE_NAME
    with pytest.raises(LodeInputError, match=r"sec-a: incomplete: 7 block\(s\)"):
        open_sections(store)
    assert not is_complete(zarr.open_group(str(store))["sec-a/labels/minerals"])
    run_segmentation(replace(cfg, max_blocks=None))
    (section,) = open_sections(store)
    assert section.missing == () and is_complete(section.labels) and is_complete(section.image)
    assert VOID not in np.unique(section.level0[:])
    shutil.rmtree(tmp_path / "run")


def test_analyze_refuses_an_incomplete_store_and_allow_incomplete_measures_written_blocks(tmp_path, capsys):
    import pandas as pd

    from engine.analyze.grains import grain_lut_for, measure_labels

    truth = _labels(6)
    written = {(0, 0), (0, 64), (64, 128)}
    store, _ = _store(tmp_path, truth, written, complete=False)
    argv = ["analyze", str(store), "--out", str(tmp_path / "a"), "--executor", "serial", "--no-report"]
    assert lode(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s1: incomplete: 3 block(s)" in err[0]
    assert not (tmp_path / "a" / "grains.parquet").exists()
    assert lode(argv + ["--allow-incomplete"]) == 0
    assert "INCOMPLETE s1: 3 block(s)" in capsys.readouterr().out
    grains = pd.read_parquet(tmp_path / "a" / "grains.parquet")
    pred = truth.copy()
    pred[:, :24] = 6
    only = np.full(truth.shape, VOID, np.uint8)
    for y0, x0 in written:
        only[y0 : y0 + BLOCK, x0 : x0 + BLOCK] = pred[y0 : y0 + BLOCK, x0 : x0 + BLOCK]
    want, _ = measure_labels(only, only.shape, (BLOCK, BLOCK), grain_lut_for(LUMENSTONE.codes, [0]))
    assert len(grains) == len(want) > 0
    assert grains["area_px"].sum() == want["area_px"].sum() == int(((only != 0) & (only != VOID)).sum())
    stats = pd.read_parquet(tmp_path / "a" / "statistics.parquet")
    frac = stats[(stats.statistic == "area_fraction") & (stats.scope == "section")].set_index("class_code").value
    assert frac.sum() == pytest.approx(1.0) and frac[6] == pytest.approx((only == 6).sum() / (only != VOID).sum())
    assert set(stats.unit.dropna()) >= {"1", "%", "count"} and stats.unit.notna().all()


def test_a_negative_pixel_size_is_refused(tmp_path, capsys):
    store, _ = _store(tmp_path, _labels(7), None, complete=True)
    assert (
        lode(["analyze", str(store), "--executor", "serial", "--pixel-size-um", "-1", "--out", str(tmp_path / "a")])
        == 2
    )
    assert "--pixel-size-um: must be a positive" in capsys.readouterr().err
