"""Fit capture calibration: ``lode calibrate lens`` (checkerboard) and ``lode calibrate flat`` (flat + dark).

Each kind is a subcommand; another kind (colour) plugs in by adding its own subparser.
"""

from __future__ import annotations

import argparse
import json
import sys


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


def run(args: argparse.Namespace) -> int:
    from engine.stitch.frames import read_images

    if args.kind == "lens":
        from engine.calibrate.lens import fit_lens

        model = fit_lens(read_images(args.frames), args.pattern, args.frames, fix_k3=not args.fit_k3)
        model.save(args.out)
        print(json.dumps({"out": args.out, "rms_px": model.rms_px, "views": model.views,
                          "dist_coeffs": model.dist_coeffs.tolist()}))
        return 0
    if args.kind == "flat":
        from engine.calibrate.flat import fit_flat

        darks = read_images(args.dark) if args.dark else None
        ff = fit_flat(read_images(args.flat), darks, degree=args.degree, source=args.flat)
        ff.save(args.out)
        print(json.dumps({"out": args.out, "min_gain": float(ff.flat.min()), "dark_mean": float(ff.dark.mean())}))
        return 0
    raise SystemExit(f"unknown calibration kind {args.kind}")


if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(sys.modules[__name__])
