"""Stitching refuses damaged or unexpected tiles (through engine.io.images), tells blank frames from
content, and never loses a section to concurrent writers of a fresh store."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from engine.calibrate.capture import edge_mask
from engine.errors import LodeInputError
from engine.stitch.frames import Correction, grey_std
from engine.stitch.render import RenderPlan, load_frame
from engine.stitch.section import StitchOptions, create_partial, create_root, prepare_section
from engine.synth.captures import CaptureConfig, capture_grid, write_section

HW = (120, 160)


def _section(root: Path, seed: int = 3) -> list[Path]:
    write_section(
        root, "s1", capture_grid(None, CaptureConfig(frame_hw=HW, seed=seed, rows=1, cols=2)), positions=False
    )
    return sorted((root / "s1" / "tiles").iterdir())


def _encoded(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def _truncated_jpeg(tile: Path) -> tuple[Path, bytes]:
    data = _encoded(".jpg", cv2.imread(str(tile)))
    return tile.with_suffix(".jpg"), data[: len(data) // 2]


def _truncated_png(tile: Path) -> tuple[Path, bytes]:
    data = tile.read_bytes()
    return tile, data[: len(data) - 1000]


def _sixteen_bit(tile: Path) -> tuple[Path, bytes]:
    return tile, _encoded(".png", cv2.imread(str(tile)).astype(np.uint16) * 257)


def _grey(tile: Path) -> tuple[Path, bytes]:
    return tile, _encoded(".png", cv2.imread(str(tile), cv2.IMREAD_GRAYSCALE))


def _rgba(tile: Path) -> tuple[Path, bytes]:
    return tile, _encoded(".png", cv2.cvtColor(cv2.imread(str(tile)), cv2.COLOR_BGR2BGRA))


def _other_size(tile: Path) -> tuple[Path, bytes]:
    return tile, _encoded(".png", cv2.imread(str(tile))[:, :-8])


@pytest.mark.ray
@pytest.mark.parametrize(
    "damage, reason",
    [
        (_truncated_jpeg, "truncated"),
        (_truncated_png, "truncated"),
        (_sixteen_bit, "8-bit"),
        (_grey, "3 colour channels"),
        (_rgba, "3 colour channels"),
        (_other_size, "first frame"),
    ],
)
def test_a_bad_tile_fails_its_section_naming_the_file(tmp_path, corrector, damage, reason):
    tile = _section(tmp_path / "coll")[1]
    bad, data = damage(tile)
    tile.unlink()
    bad.write_bytes(data)
    store = tmp_path / "out.zarr"
    create_root(store)
    with pytest.raises(LodeInputError, match=reason) as err:
        prepare_section(tmp_path / "coll" / "s1", store, Correction(), StitchOptions(shard=128), corrector)
    assert err.value.source == str(bad) and "\x1b" not in str(err.value)
    assert list(zarr.open_group(str(store), mode="r").groups()) == []


def test_a_cached_frame_reads_back_mapped_and_a_damaged_one_is_named(tmp_path):
    frame = np.random.default_rng(5).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    path = tmp_path / "00000.image.npy"
    np.save(path, frame)
    got = load_frame(str(path))
    assert np.array_equal(got, frame) and not got.flags.writeable
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(LodeInputError, match="corrected frame cache unreadable") as err:
        load_frame(str(path))
    assert err.value.source == str(path)


def test_grey_std_tells_a_blank_frame_from_content():
    caps = capture_grid(None, CaptureConfig(frame_hw=HW, seed=4, rows=1, cols=2, blank_frames=(1,)))
    rng = np.random.default_rng(0)
    black = np.clip(rng.normal(2.0, 1.0, (*HW, 3)), 0, 255).astype(np.uint8)
    limit = StitchOptions().blank_std
    stds = [grey_std(f, edge_mask(HW)) for f in (caps.frames[0], caps.frames[1], black)]
    assert stds[0] > 5 * limit and stds[1] < 0.1 and 0.3 < stds[2] < limit
    half = np.zeros((*HW, 3), np.uint8)
    half[:, : HW[1] // 2] = 200
    valid = np.zeros(HW, np.uint8)
    valid[:, HW[1] // 2 :] = 255
    assert grey_std(half, valid) == 0.0  # pixels the sensor did not see do not count


def _sections_into_fresh_store(store: str, n: int) -> None:
    """What ``lode stitch`` does to a fresh store: the root once, then ``n`` sections add their
    partial groups at the same moment (Ray tasks in the job; threads here)."""
    create_root(store)
    labels = np.zeros((4, 4), np.int16)
    plans = [RenderPlan(f"s{k}", store, f".s{k}.partial", "", (8, 8), (), (), 0.5, 1.0, (16, 16), 16) for k in range(n)]
    start = threading.Barrier(n)

    def section(plan: RenderPlan) -> None:
        start.wait()
        create_partial(plan, labels, 1)

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(section, plans))


def test_fifty_fresh_stores_with_three_concurrent_sections_lose_none(tmp_path):
    for i in range(50):
        store = str(tmp_path / f"run{i}.zarr")
        _sections_into_fresh_store(store, 3)
        groups = sorted(name for name, _ in zarr.open_group(store, mode="r").groups())
        assert groups == [".s0.partial", ".s1.partial", ".s2.partial"], (i, groups)


@pytest.mark.ray
def test_a_failed_frame_raises_only_after_every_frame_task_has_ended(tmp_path, ray_session):
    """A section's work folder is removed once its failure is recorded; a frame task still writing
    into it then (CI saw ``Directory not empty``) must be impossible."""
    import time

    import ray

    from engine.stitch.section import _frames_read

    @ray.remote
    def frame(k: int, out: str) -> float:
        if k == 0:
            raise LodeInputError(f"tile{k}.png", "expected an 8-bit image")
        time.sleep(1.5)
        Path(out, f"frame{k}.npy").write_bytes(b"x")
        return 1.0

    with pytest.raises(LodeInputError, match="8-bit") as err:
        _frames_read([frame.remote(k, str(tmp_path)) for k in range(3)])
    assert err.value.source == "tile0.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame1.npy", "frame2.npy"]
