"""Fit capture calibration: ``lode calibrate lens`` (checkerboard), ``lode calibrate flat`` (flat + dark) and
``lode calibrate colour`` (ΔE2000-fitted colour matrix from sparse annotations and reference colours)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobs.contract import Job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.stitch import _pattern

    sub = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    lens = sub.add_parser("lens", help="lens matrix and Brown–Conrady coefficients from checkerboard frames")
    lens.add_argument("frames", help="folder of checkerboard frames through the capture lens")
    lens.add_argument("--pattern", type=_pattern, default=(9, 6), help="inner corners, e.g. 9x6")
    lens.add_argument("--fit-k3", action="store_true", help="also fit k3 (default: held at 0)")
    lens.add_argument("--out", required=True, help="lens model JSON to write")
    flat = sub.add_parser("flat", help="flat field (and dark offset) from white-reference frames")
    flat.add_argument("flat", help="folder of flat (white reference) frames")
    flat.add_argument("--dark", help="folder of dark frames")
    flat.add_argument("--degree", type=int, default=4, help="degree of the smooth surface fitted to the flat")
    flat.add_argument("--out", required=True, help="flat field .npz to write")
    col = sub.add_parser(
        "colour", aliases=["color"], help="4x3 colour matrix (linear RGB) fitted by CIEDE2000 to reference colours"
    )
    col.add_argument("images", nargs="+", help="capture files or folders")
    col.add_argument(
        "--annotations",
        required=True,
        help="folder of sparse annotation masks <stem>.png (class codes; 255 = not annotated)",
    )
    col.add_argument(
        "--reference",
        required=True,
        help="model checkpoint (.pt, reference colours in its card) or JSON {code: [r, g, b]} linear",
    )
    col.add_argument(
        "--mode",
        choices=["per-image", "series"],
        default="per-image",
        help="one matrix per capture, or one for the whole series",
    )
    col.add_argument("--out", required=True, help="matrices JSON to write")
    col.add_argument("--apply", metavar="DIR", help="also write corrected captures (PNG) into DIR")


def run(cfg: Any) -> int:
    from engine.io.images import read_folder

    if cfg.kind == "lens":
        from engine.calibrate.lens import fit_lens

        model = fit_lens(read_folder(cfg.frames), cfg.pattern, cfg.frames, fix_k3=not cfg.fit_k3)
        model.save(cfg.out)
        print(
            json.dumps(
                {
                    "out": cfg.out,
                    "rms_px": model.rms_px,
                    "views": model.views,
                    "dist_coeffs": model.dist_coeffs.tolist(),
                }
            )
        )
        return 0
    if cfg.kind == "flat":
        from engine.calibrate.flat import fit_flat

        darks = read_folder(cfg.dark) if cfg.dark else None
        ff = fit_flat(read_folder(cfg.flat), darks, degree=cfg.degree, source=cfg.flat)
        ff.save(cfg.out)
        print(json.dumps({"out": cfg.out, "min_gain": float(ff.flat.min()), "dark_mean": float(ff.dark.mean())}))
        return 0
    if cfg.kind in ("colour", "color"):
        return _colour(cfg)
    raise SystemExit(f"unknown calibration kind {cfg.kind}")


def _colour(cfg: Any) -> int:
    from pathlib import Path

    import cv2

    from engine.calibrate.colour import fit_captures, save_matrices
    from engine.errors import LodeInputError
    from engine.io.images import list_images, read_rgb, write_image
    from engine.segment.card import reference_from_file

    missing = next((p for p in map(Path, cfg.images) if not p.exists()), None)
    if missing is not None:
        raise LodeInputError(missing, "no such capture file or folder")
    paths = [q for p in map(Path, cfg.images) for q in (list_images(p) if p.is_dir() else [p])]
    if not paths:
        raise LodeInputError(", ".join(cfg.images), "no captures")
    matrices = fit_captures(paths, cfg.annotations, reference_from_file(cfg.reference), cfg.mode)
    save_matrices(cfg.out, matrices, cfg.mode)
    if cfg.apply:
        out = Path(cfg.apply)
        out.mkdir(parents=True, exist_ok=True)
        for p in paths:
            write_image(out / f"{p.stem}.png", cv2.cvtColor(matrices[p.stem].apply(read_rgb(p)), cv2.COLOR_RGB2BGR))
    print(
        json.dumps(
            {
                "out": cfg.out,
                "mode": cfg.mode,
                "captures": len(paths),
                **{
                    key: {k: round(m.info.get(key, float("nan")), 4) for k, m in matrices.items()}
                    for key in ("mean_delta_e_before", "mean_delta_e_fit")
                },
            }
        )
    )
    return 0


JOB = Job(
    "calibrate",
    add_arguments,
    run,
    description=__doc__,
    outputs={"apply": "folder"},
    file_out={"kind": ("lens", "flat", "colour", "color")},
)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
