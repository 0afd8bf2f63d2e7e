"""report.html renders in headless Chromium (Debian package ``chromium``) with every section and plot:
the collection's and each section's."""

import shutil
import subprocess
from html.parser import HTMLParser

import pandas as pd
import pytest

from engine.analyze.collection import analyze_store


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome-headless-shell"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no headless browser: install the Debian package 'chromium' (apt-get install chromium)")


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict] = []
        self.sections: list[str] = []
        self.cells: list[dict] = []
        self.tables: list[str] = []
        self.headings: list[str] = []
        self._table = None
        self._heading = False
        self._section: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append({**a, "section": self._section})
        elif tag == "section" and "data-section" in a:
            self.sections.append(a["data-section"])
            self._section = a["data-section"]
        elif tag == "table" and "data-scope" in a:
            self._table = a["data-scope"]
            self.tables.append(self._table)
        elif tag == "td" and "data-value" in a:
            self.cells.append({**a, "scope": self._table})
        self._heading = tag == "h2"

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._heading:
            self.headings.append(data)
            self._heading = False


@pytest.fixture(scope="module")
def rendered(two_sections, tmp_path_factory):
    store, truth = two_sections
    out = tmp_path_factory.mktemp("report")
    res = analyze_store(store, out)
    proc = subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            f"--user-data-dir={out / 'profile'}",
            "--dump-dom",
            res.report_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _Dom()
    dom.feed(proc.stdout)
    return dom, res, truth, out


def test_every_section_and_plot_is_shown(rendered):
    dom, res, truth, out = rendered
    assert dom.sections == sorted(truth)
    ids = {img["id"]: img for img in dom.imgs}
    files = {"plot-composition": "composition", "plot-sizes": "sizes", "plot-association": "association"}
    block: dict[str, str | None] = dict.fromkeys(files)
    for s in truth:
        mine = {
            f"overlay-{s}": f"overlay_{s}",
            f"plot-sizes-{s}": f"sizes_{s}",
            f"plot-association-{s}": f"association_{s}",
        }
        files |= mine
        block |= dict.fromkeys(mine, s)
    assert set(ids) == set(files)
    assert {ident: img["section"] for ident, img in ids.items()} == block
    import cv2

    for ident, img in ids.items():
        width = cv2.imread(str(out / f"{files[ident]}.png")).shape[1]
        assert int(img.get("data-w", 0)) == width, f"{ident} was not decoded by the browser"
    plots = {k: (out / f"{v}.png").read_bytes() for k, v in files.items() if k.startswith("plot-sizes")}
    assert len(set(plots.values())) == len(plots), "each section's size plot shows its own grains"


def test_no_quality_table_without_stitch_or_colour_records(rendered):
    dom, res, truth, _ = rendered
    quality = pd.read_parquet(res.quality_path)
    assert list(quality.section) == sorted(truth)
    assert quality.drop(columns="section").isna().all(axis=None)
    assert "Quality" not in dom.headings


def test_composition_numbers_equal_parquet(rendered):
    dom, res, truth, _ = rendered
    stats = pd.read_parquet(res.statistics_path)
    assert set(dom.tables) == {"collection"} | {f"section:{s}" for s in truth}
    checked = 0
    for cell in dom.cells:
        scope = cell["scope"]
        sel = stats[(stats.statistic == cell["class"]) & (stats.class_code == int(cell["data-code"]))]
        sel = sel[sel.section.isna()] if scope == "collection" else sel[sel.section == scope.split(":", 1)[1]]
        assert float(cell["data-value"]) == sel.value.item()
        checked += 1
    af = stats[(stats.statistic == "area_fraction") & (stats.value > 0)]
    shown = [c for c in dom.cells if c["class"] == "area_fraction"]
    assert len(shown) == len(af) and checked > len(af)
    densities = [c for c in dom.cells if c["class"] == "density"]
    assert {(c["scope"], c["data-code"]) for c in densities} == {(c["scope"], c["data-code"]) for c in shown}
