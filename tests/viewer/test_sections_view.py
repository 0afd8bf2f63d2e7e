"""``lode view`` on a small synthetic segmentation store, driven in headless Chromium: mineral
colours at known grain centres, a class toggled off, a grain's row shown on a click."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from engine.analyze.collection import analyze_store
from engine.classes import LUMENSTONE
from engine.io.ome import open_store, write_block
from engine.view.headless import ViewProcess
from tests.analyze.synthetic_sections import place_grains, write_store

GREY = 128
COLOURS = {c.code: c.color for c in LUMENSTONE.classes}


def grey_image(store, section: str, shape: tuple[int, int], block: int) -> None:
    """Replace a section's image by uniform grey, so that the label colours stand apart from it."""
    img = open_store(store, mode="r+")[section]
    for y0 in range(0, shape[0], block):
        for x0 in range(0, shape[1], block):
            h, w = min(block, shape[0] - y0), min(block, shape[1] - x0)
            write_block(img, np.full((3, h, w), GREY, np.uint8), y0, x0, "image")


def deep_point(labels: np.ndarray, row) -> tuple[int, int]:
    """The pixel of a grain farthest from its edge."""
    crop = labels[row.bbox_y0 : row.bbox_y1, row.bbox_x0 : row.bbox_x1] == row.class_code
    dist = ndi.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return int(row.bbox_y0 + y), int(row.bbox_x0 + x)


@pytest.fixture(scope="module")
def viewed(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    truth = {
        "s1": place_grains((384, 512), [1, 2, 5, 6, 8], 50, seed=21).labels,
        "s2": place_grains((384, 512), [1, 6], 20, seed=22).labels,
    }
    one_hot = (truth["s1"][None] == np.arange(len(LUMENSTONE))[:, None, None]).astype(np.uint8) * 255
    store = write_store(out / "lode.ome.zarr", truth, block=256, probabilities={"s1": one_hot})
    for name, lab in truth.items():
        grey_image(store, name, lab.shape, 256)
    analyze_store(store, out, report=False)
    grains = pd.read_parquet(out / "grains.parquet")
    view = ViewProcess(out, out / "requests.log")
    yield view, truth, grains[grains.section == "s1"]
    view.stop()


@pytest.fixture(scope="module")
def page(viewed, browser):
    view = viewed[0]
    browser.goto(view.url)
    browser.evaluate("lode.ready")
    browser.evaluate("lode.setOpacity(1); lode.showImageRect(0, 0, 512, 384); lode.idle()")
    return browser


def five_grains(grains: pd.DataFrame, labels: np.ndarray) -> list[tuple[object, tuple[int, int]]]:
    """The largest grain of each of the five classes, with its deepest pixel."""
    big = grains.sort_values("area_px", ascending=False).drop_duplicates("class_code").head(5)
    assert len(big) == 5
    return [(row, deep_point(labels, row)) for row in big.itertuples(index=False)]


def screen_colour(page, y: int, x: int) -> np.ndarray:
    p = page.evaluate(f"lode.toPage({x + 0.5}, {y + 0.5})")
    return page.screenshot()[int(p["y"]), int(p["x"])].astype(int)


def test_page_loads_without_console_errors(page):
    assert page.evaluate("document.querySelectorAll('#sections button').length") == 2
    assert page.evaluate("lode.errors.length") == 0
    assert page.console_errors() == []


def test_grain_centres_have_their_class_colours(page, viewed):
    _, truth, grains = viewed
    shot = page.screenshot()
    for row, (y, x) in five_grains(grains, truth["s1"]):
        p = page.evaluate(f"lode.toPage({x + 0.5}, {y + 0.5})")
        got = shot[int(p["y"]), int(p["x"])].astype(int)
        assert np.abs(got - COLOURS[row.class_code]).max() <= 3, (row.class_name, got)


def test_legend_lists_area_percent_from_statistics(page, viewed):
    view, truth, _ = viewed
    cells = page.evaluate(
        "[...document.querySelectorAll('#classes tr')].map(r => "
        "[Number(r.dataset.code), Number(r.querySelector('.area').dataset.value)])"
    )
    stats = pd.read_parquet(view.log.parent / "statistics.parquet")
    s = stats[(stats.statistic == "area_fraction") & (stats.section == "s1")]
    want = {int(c): 100 * v for c, v in zip(s.class_code, s.value)}
    shown = dict(cells)
    counts = np.bincount(truth["s1"].ravel(), minlength=256)
    for code in (1, 2, 5, 6, 8):
        assert shown[code] == pytest.approx(want[code])
        assert shown[code] == pytest.approx(100 * counts[code] / truth["s1"].size, abs=1e-6)


def test_scale_bar_in_micrometres(page):
    text = page.evaluate("document.getElementById('scalebar-text').textContent")
    um, px = page.evaluate("[Number(scalebar.dataset.um), Number(scalebar.dataset.px)]")
    zoom = page.evaluate("lode.viewer.world.getItemAt(0).viewportToImageZoom(lode.viewer.viewport.getZoom(true))")
    assert text.endswith("µm") and float(text.split()[0]) == um
    assert px == pytest.approx(um / 0.5 * zoom, rel=1e-6)  # 0.5 µm pixels


def test_toggling_a_class_off_removes_its_colour(page, viewed):
    _, truth, grains = viewed
    (row, (y, x)), (other, (oy, ox)) = five_grains(grains, truth["s1"])[:2]
    page.evaluate(f"document.querySelector('#classes input[data-code=\"{row.class_code}\"]').click()")
    page.evaluate("lode.state.update.then(() => lode.idle())")
    try:
        assert np.abs(screen_colour(page, y, x) - GREY).max() <= 3
        assert np.abs(screen_colour(page, oy, ox) - COLOURS[other.class_code]).max() <= 3
    finally:
        page.evaluate(f"document.querySelector('#classes input[data-code=\"{row.class_code}\"]').click()")
        page.evaluate("lode.state.update.then(() => lode.idle())")
    assert np.abs(screen_colour(page, y, x) - COLOURS[row.class_code]).max() <= 3


def test_clicking_a_grain_shows_its_row(page, viewed):
    _, truth, grains = viewed
    for row, (y, x) in five_grains(grains, truth["s1"])[:2]:
        p = page.evaluate(f"lode.toPage({x + 0.5}, {y + 0.5})")
        page.click(p["x"], p["y"])
        got = page.evaluate(
            "new Promise(r => { const t = () => { const g = document.getElementById('grain'); "
            f"if (g.dataset.grainId === '{row.grain_id}') r({{...g.dataset}}); else setTimeout(t, 20); }}; t(); }})",
            timeout=20,
        )
        assert int(got["areaPx"]) == row.area_px
        fields = page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#grain-fields dd')]"
            ".map(d => [d.dataset.field, d.textContent]))"
        )
        assert fields["id"] == str(row.grain_id) and fields["mineral"] == row.class_name
        assert float(fields["area"].split()[0]) == pytest.approx(row.area_um2, rel=1e-3)


def test_tiles_are_byte_ranges_of_the_store_files(viewed):
    view = viewed[0]
    lines = view.requests()
    ranged = [ln for ln in lines if ln.startswith("GET /store/s1/") and "/c/" in ln]
    assert ranged and all(" bytes=" in ln and " 206 " in ln for ln in ranged), ranged[:5]
    assert not any(" 404 " in ln or " 400 " in ln for ln in lines), [ln for ln in lines if " 40" in ln]


def choose_probability(page, value: str) -> None:
    page.evaluate(
        f"(() => {{ const s = document.getElementById('probability'); s.value = '{value}'; "
        "s.dispatchEvent(new Event('change')); return lode.state.update.then(() => lode.idle()); })()"
    )


def test_probability_channel_overlay(page, viewed):
    _, truth, grains = viewed
    (row, (y, x)), (other, (oy, ox)) = five_grains(grains, truth["s1"])[:2]
    options = page.evaluate("[...document.querySelectorAll('#probability option')].map(o => o.value)")
    assert options[:2] == ["none", "-1"] and len(options) == 2 + len(LUMENSTONE)
    choose_probability(page, str(row.class_code))
    try:
        magenta = 0.8 * np.array([255, 0, 255]) + 0.2 * np.array(COLOURS[row.class_code])
        assert np.abs(screen_colour(page, y, x) - magenta).max() <= 3  # p = 1 drawn at 0.8 opacity
        assert np.abs(screen_colour(page, oy, ox) - COLOURS[other.class_code]).max() <= 3  # p = 0: transparent
        assert page.console_errors() == []
    finally:
        choose_probability(page, "none")


def test_switching_to_another_section(page, viewed):
    _, truth, _ = viewed
    page.evaluate("document.querySelector('#sections button[data-section=\"s2\"]').click()")
    page.evaluate(
        "new Promise(r => { const t = () => lode.state.current.name === 's2' && "
        "lode.layer('labels') ? r() : setTimeout(t, 20); t(); }).then(() => lode.idle())"
    )
    shown = dict(
        page.evaluate(
            "[...document.querySelectorAll('#classes tr')].map(r => "
            "[Number(r.dataset.code), Number(r.querySelector('.area').dataset.value)])"
        )
    )
    counts = np.bincount(truth["s2"].ravel(), minlength=256)
    assert shown[6] == pytest.approx(100 * counts[6] / truth["s2"].size) and shown[2] == 0
    assert page.evaluate("document.getElementById('prob-row').hidden")  # s2 has no probabilities
    assert page.console_errors() == []
