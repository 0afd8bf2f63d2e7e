"""Self-contained ``report.html`` of a collection, with the same plots written as PNG.

Every number and plot is drawn from ``grains.parquet``, ``statistics.parquet`` and
``quality.parquet`` (read back from disk), except the overlay thumbnails, which show the
stored label images.
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

from engine.analyze.quality import quality_table
from engine.analyze.sections import Section
from engine.classes import ClassSet
from engine.io import fs
from engine.io.atomic import atomic_write_bytes
from engine.io.layout import array_at

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


def _in_scope(stats: pd.DataFrame, section: str | None) -> pd.DataFrame:
    """The statistics of one section, or of the collection when ``section`` is None."""
    if section is None:
        return stats[stats.scope == "collection"]
    return stats[(stats.scope == "section") & (stats.section == section)]


def _scope_title(section: str | None) -> str:
    return "collection" if section is None else f"section {section}"


def size_plot(stats: pd.DataFrame, classes: ClassSet, section: str | None = None) -> bytes:
    """Grain-size distribution (share of each mineral's grain area per size class) of one section, or
    of the collection when ``section`` is None."""
    plt = _figure()
    sz = _in_scope(stats, section)
    sz = sz[sz.statistic == "size_area_fraction"]
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
    ax.set_title(f"Grain-size distribution by mineral ({_scope_title(section)})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _png(fig)


def association_plot(stats: pd.DataFrame, classes: ClassSet, section: str | None = None) -> bytes:
    """Each mineral's share of its boundary shared with every other phase, of one section or of the
    collection when ``section`` is None."""
    plt = _figure()
    bl = _in_scope(stats, section)
    bl = bl[bl.statistic == "boundary_length"]
    present = sorted(set(bl[bl.value > 0].class_code) | set(bl[bl.value > 0].other_code.dropna().astype(int)))
    title = f"Mineral association (shared boundary, {_scope_title(section)})"
    if not present:
        fig, ax = plt.subplots(figsize=(5, 1.2))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no boundary between two phases", ha="center", va="center")
        ax.set_title(title)
        return _png(fig)
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
    ax.set_title(title, pad=12)
    return _png(fig)


def overlay_thumbnail(section: Section, classes: ClassSet) -> bytes:
    """Label colours blended over the section image at a coarse pyramid level, with a legend."""
    plt = _figure()
    level = str(max(int(k) for k in section.labels.array_keys() if k.isdigit()))
    labels = array_at(section.labels, level)
    step = max(1, -(-max(labels.shape) // THUMB_MAX))
    lab = np.asarray(labels[::step, ::step])
    rgb = classes.palette()[lab].astype(np.float32)
    image = array_at(section.image, level) if level in section.image.array_keys() else None
    if image is not None and image.shape[0] == 3:
        img = np.asarray(image[:, ::step, ::step]).transpose(1, 2, 0).astype(np.float32)
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


def _composition_table(stats: pd.DataFrame, section: str | None) -> str:
    """Area %, weight % with the density it used, grains, mean ECD and liberation of each mineral
    present in one section, or in the collection when ``section`` is None."""
    sel = _in_scope(stats, section)
    af = sel[sel.statistic == "area_fraction"].set_index("class_code")
    wp = sel[sel.statistic == "weight_percent"].set_index("class_code")
    dn = sel[sel.statistic == "density"].set_index("class_code")
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
            f"{cell(wp, code, 'weight_percent', '.4f')}{cell(dn, code, 'density', '.2f')}"
            f"{cell(gc, code, 'grain_count', '.0f')}"
            f"{cell(me, code, 'mean_ecd', '.2f')}{cell(lib, code, 'liberation', '.1f', 100)}</tr>"
        )
    head = (
        f"<tr><th>mineral</th><th>area %</th><th>weight %</th><th>density (g/cm³)</th><th>grains</th>"
        f"<th>mean ECD ({unit})</th><th>liberated %</th></tr>"
    )
    key = "collection" if section is None else f"section:{section}"
    return f'<table class="composition" data-scope="{html.escape(key)}">{head}{"".join(rows)}</table>'


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}
th:first-child{text-align:left}img.plot{max-width:100%;display:block;margin:0.5em 0}
section.sample{border-top:2px solid #888;margin-top:2em}"""


def _qc_number(row: pd.Series, column: str, fmt: str) -> str:
    v = row[column]
    if pd.isna(v):
        return f'<td class="{column}"></td>'
    return f'<td class="{column}" data-value="{float(v)!r}">{format(float(v), fmt)}</td>'


def _qc_table(quality: pd.DataFrame) -> str:
    """The Quality table: one row per section of ``quality`` (the rows of ``quality.parquet``, from
    :func:`engine.analyze.quality.quality_table`); empty when no section carries a stitch or colour
    record."""
    if quality.drop(columns="section").isna().all(axis=None):
        return ""
    rows = []
    for _, r in quality.iterrows():
        frames = "" if pd.isna(r.frames_placed) else f"{int(r.frames_placed)}/{int(r.frames_total)}"
        flagged = "" if pd.isna(r.flagged_frames) else html.escape(r.flagged) or "none"
        mode = "" if pd.isna(r.colour_mode) else html.escape(r.colour_mode)
        rows.append(
            f'<tr data-section="{html.escape(r.section)}"><td>{html.escape(r.section)}</td>'
            f'<td class="frames">{frames}</td>{_qc_number(r, "stitch_rms_px", ".3f")}'
            f'<td class="flagged">{flagged}</td>{_qc_number(r, "pixel_size_um", "g")}'
            f'<td class="colour_mode">{mode}</td>{_qc_number(r, "delta_e_before", ".2f")}'
            f"{_qc_number(r, 'delta_e_after', '.2f')}</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "section",
            "frames placed",
            "stitch RMS (px)",
            "flagged frames",
            "pixel (µm)",
            "colour mode",
            "colour ΔE2000 before",
            "colour ΔE2000 after",
        )
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
    sections: Sequence[Section] | None = None,
    classes: ClassSet | None = None,
    title: str = "Lode mineralogy report",
    quality_path: str | Path | None = None,
) -> str:
    """Write report.html and its plots as composition.png, sizes.png, association.png and, per section,
    sizes_<section>.png, association_<section>.png, overlay_<section>.png (local folder or URI).

    The Quality table shows the rows of ``quality_path`` (``quality.parquet``); without one, those
    :func:`~engine.analyze.quality.quality_table` makes of ``sections``."""
    grains = _read_parquet(grains_path)
    stats = _read_parquet(statistics_path)
    if classes is None:
        c = stats[["class_code", "class_name"]].drop_duplicates().sort_values("class_code")
        classes = ClassSet.from_codes(c.class_code.astype(int))
    names = list(dict.fromkeys(stats[stats.scope == "section"].section))
    by_name = {s.name: s for s in sections or []}
    quality = (
        _read_parquet(quality_path)
        if quality_path is not None
        else quality_table([by_name[n] for n in names if n in by_name])
    )
    pngs: dict[str, bytes] = {
        "composition": composition_plot(stats, classes),
        "sizes": size_plot(stats, classes),
        "association": association_plot(stats, classes),
    }
    for name in names:
        slug = _slug(name)
        pngs[f"sizes_{slug}"] = size_plot(stats, classes, name)
        pngs[f"association_{slug}"] = association_plot(stats, classes, name)
        if name in by_name:
            pngs[f"overlay_{slug}"] = overlay_thumbnail(by_name[name], classes)
    for key, data in pngs.items():
        atomic_write_bytes(fs.join(out_dir, f"{key}.png"), data)

    tables = [grains_path, statistics_path] + ([quality_path] if quality_path is not None else [])
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{len(names)} section(s), {len(grains)} grains. Tables: "
        + ", ".join(f"<code>{html.escape(fs.name(t))}</code>" for t in tables)
        + ".</p>",
        "<h2>Collection</h2>",
        _composition_table(stats, None),
        _img(pngs["composition"], "plot-composition", "modal composition"),
        _img(pngs["sizes"], "plot-sizes", "grain-size distributions"),
        _img(pngs["association"], "plot-association", "association matrix"),
        _qc_table(quality),
    ]
    for name in names:
        slug = _slug(name)
        n = int((grains.section == name).sum())
        parts.append(
            f'<section class="sample" id="section-{html.escape(slug)}" '
            f'data-section="{html.escape(name)}"><h2>Section {html.escape(name)}</h2><p>{n} grains</p>'
        )
        if f"overlay_{slug}" in pngs:
            parts.append(_img(pngs[f"overlay_{slug}"], f"overlay-{slug}", f"labels of {name}"))
        parts.append(_composition_table(stats, name))
        parts.append(_img(pngs[f"sizes_{slug}"], f"plot-sizes-{slug}", f"grain-size distributions of {name}"))
        parts.append(_img(pngs[f"association_{slug}"], f"plot-association-{slug}", f"association matrix of {name}"))
        parts.append("</section>")
    parts.append("</body></html>")
    out = fs.join(out_dir, "report.html")
    atomic_write_bytes(out, "".join(parts).encode("utf-8"))
    return out
