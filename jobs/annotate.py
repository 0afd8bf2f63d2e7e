"""``lode annotate``: annotation aids.

``lode annotate expand --image IMG --scribbles SCRIB --out LABELS.png`` turns sparse
scribbles (a PNG of class codes, 255 where nothing is drawn) into a full label map.
``lode annotate uncertain STORE`` picks the regions of each section where the model is
least sure, covering at most ``--share`` of the image, and writes a mask PNG and a ranked
region list (JSON, level-0 pixel boxes) per section.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jobs.contract import Job

MAX_PIXELS = 4_000_000


def default_outputs(args: argparse.Namespace) -> None:
    from engine.io import fs

    if args.action == "uncertain" and not args.out and fs.is_uri(args.store):
        args.out = fs.parent(args.store)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = sub.add_parser("expand", help="expand sparse scribbles into a full label map through superpixels")
    e.add_argument("--image", required=True, help="RGB image (PNG/JPEG/TIFF)")
    e.add_argument("--scribbles", required=True, help="PNG of class codes, --unlabelled where nothing is drawn")
    e.add_argument("--out", required=True, help="output label PNG (class codes)")
    e.add_argument("--unlabelled", type=int, default=255, help="scribble value meaning 'not drawn' (default 255)")
    u = sub.add_parser("uncertain", help="select the most uncertain regions to annotate next")
    u.add_argument("store", help="segmentation store with per-section 'probabilities'")
    u.add_argument("--section", action="append", default=None, help="section name (repeatable; default all)")
    u.add_argument("--share", type=float, default=0.10, help="largest share of the image to select (default 0.10)")
    u.add_argument("--measure", choices=("least_confidence", "margin", "entropy"), default="least_confidence")
    u.add_argument(
        "--region-px", type=float, default=150.0, help="mean superpixel size in pixels at the analysed level"
    )
    u.add_argument("--out", default=None, help="output directory (default: beside the store)")


def _write_png(path: Path, array) -> None:
    import cv2

    from engine.io.atomic import atomic_write_bytes

    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"cannot encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def _read(path: str, flags: int, what: str):
    import cv2

    from engine.errors import LodeInputError

    if not Path(path).is_file():
        raise LodeInputError(path, f"no such {what} file")
    img = cv2.imread(path, flags)
    if img is None:
        raise LodeInputError(path, f"cannot decode the {what} image")
    return img


def run_expand(cfg: Any) -> dict:
    import cv2
    import numpy as np

    from engine.analyze.annotate import expand_scribbles
    from engine.classes import LUMENSTONE_CATALOGUE
    from engine.errors import LodeInputError

    img = _read(cfg.image, cv2.IMREAD_COLOR, "image")[..., ::-1].copy()
    sc = _read(cfg.scribbles, cv2.IMREAD_UNCHANGED, "scribbles")
    if sc.ndim != 2 or sc.dtype != np.uint8:
        raise LodeInputError(cfg.scribbles, f"scribbles must be a single-channel 8-bit PNG, got {sc.dtype} {sc.shape}")
    if sc.shape != img.shape[:2]:
        raise LodeInputError(cfg.scribbles, f"shape {sc.shape} differs from the image's {img.shape[:2]}")
    codes = set(np.unique(sc).tolist()) - {cfg.unlabelled}
    if not codes:
        raise LodeInputError(cfg.scribbles, "holds no scribbles")
    unknown = sorted(codes - set(LUMENSTONE_CATALOGUE))
    if unknown:
        raise LodeInputError(cfg.scribbles, f"unknown class codes {unknown}")
    out = expand_scribbles(img, sc, unlabelled=cfg.unlabelled)
    _write_png(Path(cfg.out), out)
    return {
        "labels": cfg.out,
        "scribbled_share": float((sc != cfg.unlabelled).mean()),
        "classes": sorted(int(c) for c in codes),
    }


def run_uncertain(cfg: Any) -> dict:
    import numpy as np
    from scipy import ndimage as ndi

    from engine.analyze.annotate import level_arrays, select_uncertain
    from engine.analyze.sections import open_sections
    from engine.errors import LodeInputError
    from engine.io.atomic import atomic_write_text

    if not 0 < cfg.share <= 1:
        raise LodeInputError("--share", f"must be in (0, 1], got {cfg.share}")
    store = Path(cfg.store)
    out = Path(cfg.out) if cfg.out else store.resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    sections = open_sections(store)
    if cfg.section:
        missing = sorted(set(cfg.section) - {s.name for s in sections})
        if missing:
            raise LodeInputError(store, f"no sections {missing}")
        sections = [s for s in sections if s.name in cfg.section]
    report = {}
    for s in sections:
        if s.probabilities() is None:
            raise LodeInputError(s.source, "has no stored probabilities")
        prob, img, scale = level_arrays(s, MAX_PIXELS)
        sel = select_uncertain(prob, cfg.share, image=img, region_px=cfg.region_px, measure=cfg.measure)
        boxes = ndi.find_objects(sel.regions + 1)
        sizes = np.bincount(sel.regions.ravel())
        regions = []
        for rank, (r, score) in enumerate(zip(sel.ranked, sel.scores)):
            ys, xs = boxes[r]
            regions.append(
                {
                    "rank": rank,
                    "score": float(score),
                    "pixels": int(sizes[r] * scale * scale),
                    "bbox_level0": [ys.start * scale, xs.start * scale, ys.stop * scale, xs.stop * scale],
                }
            )
        _write_png(out / f"uncertain_{s.name}.png", sel.mask.astype(np.uint8) * 255)
        doc = {
            "section": s.name,
            "measure": cfg.measure,
            "share": sel.share,
            "downsample": scale,
            "mask": f"uncertain_{s.name}.png",
            "regions": regions,
        }
        path = out / f"uncertain_{s.name}.json"
        atomic_write_text(path, json.dumps(doc, indent=1))
        report[s.name] = {"share": sel.share, "regions": len(regions), "json": str(path)}
    return report


def run(cfg: Any) -> int:
    result = run_expand(cfg) if cfg.action == "expand" else run_uncertain(cfg)
    print(json.dumps(result, indent=2))
    return 0


JOB = Job(
    "annotate",
    add_arguments,
    run,
    description=__doc__,
    file_out={"action": ("expand",)},
    default_outputs=default_outputs,
)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
