"""Self-contained ``report.html`` of a collection, with the same plots written as PNG.

Every number and plot is drawn from ``grains.parquet`` and ``statistics.parquet`` (read
back from disk), except the overlay thumbnails, which show the stored label images.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from engine.classes import ClassSet
from engine.io import fs
from engine.io.atomic import atomic_write_bytes

THUMB_MAX = 800


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _figure().close(fig)
    return buf.getvalue()


def _colour(classes: ClassSet, code: int) -> tuple[float, float, float]:
    pal = classes.palette()[int(code)]
    return tuple(float(v) / 255 for v in pal)  # type: ignore[return-value]


def composition_plot(stats: pd.DataFrame, classes: ClassSet) -> bytes:
    plt = _figure()
    af = stats[stats.statistic == "area_fraction"].copy()
    af["row"] = np.where(af.scope == "collection", "collection", af.section.fillna(""))
    rows = list(dict.fromkeys(af[af.scope == "section"].section)) + ["collection"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.6))
    left = np.zeros(len(rows))
    for code in classes.codes:
        v = af[af.class_code == code].set_index("row").reindex(rows)["value"].fillna(0).to_numpy() * 100
        if not v.any():
            continue
        ax.barh(
            rows,
            v,
            left=left,
            color=_colour(classes, code),
            edgecolor="black",
            linewidth=0.3,
            label=classes.names[classes.codes.index(code)],
        )
        left += v
    ax.set_xlabel("area %")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("Modal composition (area %)")
    return _png(fig)


def size_plot(stats: pd.DataFrame, classes: ClassSet) -> bytes:
    plt = _figure()
    sz = stats[(stats.statistic == "size_area_fraction") & (stats.scope == "collection")]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    unit = sz.unit.iloc[0] if len(sz) else "px"
    for code, g in sz.groupby("class_code"):
        if g.value.sum() <= 0:
            continue
        edges = np.append(g.size_lo.to_numpy(), g.size_hi.to_numpy()[-1])
        ax.stairs(
            g.value.to_numpy() * 100, edges, color=_colour(classes, code), linewidth=2, label=g.class_name.iloc[0]
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"equivalent circle diameter ({'µm' if unit == 'um' else 'px'}), √2 classes")
    ax.set_ylabel("% of mineral grain area")
    ax.set_title("Grain-size distribution by mineral (collection)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _png(fig)


def association_plot(stats: pd.DataFrame, classes: ClassSet) -> bytes:
    plt = _figure()
    bl = stats[(stats.statistic == "boundary_length") & (stats.scope == "collection")]
    present = sorted(set(bl[bl.value > 0].class_code) | set(bl[bl.value > 0].other_code.dropna().astype(int)))
    names = {c.code: c.name for c in classes.classes}
    idx = {c: i for i, c in enumerate(present)}
    m = np.zeros((len(present), len(present)))
    for r in bl[bl.value > 0].itertuples():
        i, j = idx[int(r.class_code)], idx[int(r.other_code)]
        m[i, j] = m[j, i] = r.value
    share = m / np.maximum(m.sum(1, keepdims=True), 1e-12) * 100
    fig, ax = plt.subplots(figsize=(2.5 + 0.55 * max(len(present), 2), 1.2 + 0.5 * max(len(present), 2)))
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(len(present)), [names[c] for c in present], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(present)), [names[c] for c in present], fontsize=8)
    for i in range(len(present)):
        for j in range(len(present)):
            if share[i, j] >= 0.5:
                ax.text(
                    j,
                    i,
                    f"{share[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] < 60 else "black",
                )
    fig.colorbar(im, ax=ax, label="% of row mineral's boundary")
    ax.set_title("Mineral association (shared boundary)", pad=12)
    return _png(fig)


def overlay_thumbnail(section, classes: ClassSet) -> bytes:
    """Label colours blended over the section image at a coarse pyramid level, with a legend."""
    plt = _figure()
    levels = sorted(int(k) for k in section.labels.array_keys() if k.isdigit())
    k = levels[-1]
    lab = section.labels[str(k)]
    step = max(1, -(-max(lab.shape) // THUMB_MAX))
    lab = np.asarray(lab[::step, ::step])
    rgb = classes.palette()[lab].astype(np.float32)
    if str(k) in section.image and section.image[str(k)].shape[0] == 3:
        img = np.asarray(section.image[str(k)][:, ::step, ::step]).transpose(1, 2, 0).astype(np.float32)
        if img.shape[:2] == rgb.shape[:2] and img.max() > 0:
            rgb = 0.55 * rgb + 0.45 * img
    fig, ax = plt.subplots(figsize=(7, 7 * lab.shape[0] / max(lab.shape[1], 1) + 0.3))
    ax.imshow(np.clip(rgb, 0, 255).astype(np.uint8), interpolation="nearest")
    ax.set_axis_off()
    from matplotlib.patches import Patch

    present = [c for c in classes.classes if np.any(lab == c.code)]
    ax.legend(
        handles=[Patch(color=(c.color[0] / 255, c.color[1] / 255, c.color[2] / 255), label=c.name) for c in present],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
    ax.set_title(section.name)
    return _png(fig)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _img(png: bytes, ident: str, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return (
        f'<img id="{html.escape(ident)}" class="plot" alt="{html.escape(alt)}" '
        f'src="data:image/png;base64,{data}" onload="this.dataset.w=this.naturalWidth">'
    )


def _composition_table(stats: pd.DataFrame, scope: str, section: str | None) -> str:
    sel = stats[(stats.scope == scope) & ((stats.section == section) if section is not None else stats.section.isna())]
    af = sel[sel.statistic == "area_fraction"].set_index("class_code")
    wp = sel[sel.statistic == "weight_percent"].set_index("class_code")
    gc = sel[sel.statistic == "grain_count"].set_index("class_code")
    me = sel[sel.statistic == "mean_ecd"].set_index("class_code")
    lib = sel[sel.statistic == "liberation"].set_index("class_code")
    unit = "µm" if (me.unit == "um").any() else "px"
    rows = []

    def cell(df: pd.DataFrame, code: int, kind: str, fmt: str, scale: float = 1.0) -> str:
        if code not in df.index:
            return "<td>–</td>"
        v = float(df.loc[code, "value"])
        return f'<td class="{kind}" data-code="{code}" data-value="{v!r}">{format(v * scale, fmt)}</td>'

    for code, r in af.iterrows():
        if r.value == 0 and (code not in gc.index or gc.loc[code, "value"] == 0):
            continue
        rows.append(
            f"<tr><th>{html.escape(r.class_name)}</th>{cell(af, code, 'area_fraction', '.4f', 100)}"
            f"{cell(wp, code, 'weight_percent', '.4f')}{cell(gc, code, 'grain_count', '.0f')}"
            f"{cell(me, code, 'mean_ecd', '.2f')}{cell(lib, code, 'liberation', '.1f', 100)}</tr>"
        )
    head = (
        f"<tr><th>mineral</th><th>area %</th><th>weight %</th><th>grains</th><th>mean ECD ({unit})</th>"
        f"<th>liberated %</th></tr>"
    )
    key = "collection" if scope == "collection" else f"section:{section}"
    return f'<table class="composition" data-scope="{html.escape(key)}">{head}{"".join(rows)}</table>'


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}
th:first-child{text-align:left}img.plot{max-width:100%;display:block;margin:0.5em 0}
section.sample{border-top:2px solid #888;margin-top:2em}"""


def _qc_table(sections: Sequence) -> str:
    """Per section, what the stitching and colour calibration recorded in the store: frames placed, the
    stitch RMS (px) and flagged frames (``attrs["lode"]["stitch"]``), the colour fit's mean ΔE2000
    (``attrs["colour_calibration"]``); empty when no section carries either."""
    from engine.io.layout import attrs_of

    rows = []
    for s in sections:
        attrs = attrs_of(s.image)
        st = attrs.get("lode", {}).get("stitch")
        colour = attrs.get("colour_calibration")
        if st is None and colour is None:
            continue
        info = (colour or {}).get("info", {})
        cells = [
            html.escape(s.name),
            "" if st is None else f"{st['frames_placed']}/{st['frames_total']}",
            "" if st is None or st.get("rms_px") is None else f"{st['rms_px']:.3f}",
            "" if st is None else html.escape(", ".join(st.get("flagged", [])) or "none"),
            "" if st is None or st.get("pixel_size_um") is None else f"{st['pixel_size_um']:g}",
            "" if "mean_delta_e_fit" not in info else f"{info['mean_delta_e_fit']:.2f}",
        ]
        rows.append(f'<tr data-section="{html.escape(s.name)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not rows:
        return ""
    head = "".join(
        f"<th>{h}</th>"
        for h in ("section", "frames placed", "stitch RMS (px)", "flagged frames", "pixel (µm)", "colour ΔE2000 fit")
    )
    return f'<h2>Quality</h2><table class="qc"><tr>{head}</tr>{"".join(rows)}</table>'


def _read_parquet(path: str | Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    filesystem, inner = fs.arrow_filesystem(path)
    return pq.read_table(inner, filesystem=filesystem).to_pandas()


def write_report(
    grains_path: str | Path,
    statistics_path: str | Path,
    out_dir: str | Path,
    sections: Sequence | None = None,
    classes: ClassSet | None = None,
    title: str = "Lode mineralogy report",
) -> str:
    """Write report.html and composition.png, sizes.png, association.png, overlay_<section>.png
    (local folder or URI)."""
    grains = _read_parquet(grains_path)
    stats = _read_parquet(statistics_path)
    if classes is None:
        c = stats[["class_code", "class_name"]].drop_duplicates().sort_values("class_code")
        classes = ClassSet.from_codes(c.class_code.astype(int))
    pngs: dict[str, bytes] = {
        "composition": composition_plot(stats, classes),
        "sizes": size_plot(stats, classes),
        "association": association_plot(stats, classes),
    }
    names = list(dict.fromkeys(stats[stats.scope == "section"].section))
    by_name = {s.name: s for s in sections or []}
    for name in names:
        if name in by_name:
            pngs[f"overlay_{_slug(name)}"] = overlay_thumbnail(by_name[name], classes)
    for key, data in pngs.items():
        atomic_write_bytes(fs.join(out_dir, f"{key}.png"), data)

    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{len(names)} section(s), {len(grains)} grains. Tables: <code>{html.escape(fs.name(grains_path))}"
        f"</code>, <code>{html.escape(fs.name(statistics_path))}</code>.</p>",
        "<h2>Collection</h2>",
        _composition_table(stats, "collection", None),
        _img(pngs["composition"], "plot-composition", "modal composition"),
        _img(pngs["sizes"], "plot-sizes", "grain-size distributions"),
        _img(pngs["association"], "plot-association", "association matrix"),
        _qc_table([by_name[n] for n in names if n in by_name]),
    ]
    for name in names:
        n = int((grains.section == name).sum())
        parts.append(
            f'<section class="sample" id="section-{html.escape(_slug(name))}" '
            f'data-section="{html.escape(name)}"><h2>Section {html.escape(name)}</h2><p>{n} grains</p>'
        )
        parts.append(_composition_table(stats, "section", name))
        if f"overlay_{_slug(name)}" in pngs:
            parts.append(_img(pngs[f"overlay_{_slug(name)}"], f"overlay-{_slug(name)}", f"labels of {name}"))
        parts.append("</section>")
    parts.append("</body></html>")
    out = fs.join(out_dir, "report.html")
    atomic_write_bytes(out, "".join(parts).encode("utf-8"))
    return out
