"""Crossed-polar channels: XPL → PPL registration accuracy and PPL-only vs PPL + 6 XPL models.

``python -m benchmarks.xpl --json OUT`` measures, in one run:

- registration of synthetic XPL stacks (6 stage angles 0–75°, rotation-centre offsets up to 6 px, extra
  rotation up to 0.4°) against the truth: rotation and translation (image-centre) errors, SIFT + RANSAC
  affine alone and with ECC refinement;
- on a synthetic S3-like set (arsenopyrite and marcasite close to pyrite in PPL), two models of the
  same architecture and training budget: PPL only (3 channels) and PPL + 6 registered XPL channels
  (9 channels); per-class IoU on held-out sections, mean over the anisotropic classes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def registration(n_stacks: int, size: tuple[int, int], seed: int) -> dict:
    from engine.register.xpl import XplOptions, register_xpl
    from engine.synth.xpl import XplConfig, render_xpl_stack, s3_lookalike_spec

    h, w = size
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    out = {}
    rows: dict[str, list] = {"sift_ransac": [], "sift_ransac_ecc": []}
    t = {"sift_ransac": 0.0, "sift_ransac_ecc": 0.0}
    for i in range(n_stacks):
        st = render_xpl_stack(s3_lookalike_spec(seed + i), h, w, XplConfig(seed=seed + i))
        for k, img in enumerate(st.xpl):
            truth = st.transforms[k]
            for name, ecc in (("sift_ransac", False), ("sift_ransac_ecc", True)):
                t0 = time.perf_counter()
                r = register_xpl(st.ppl, img, XplOptions(ecc=ecc))
                t[name] += time.perf_counter() - t0
                d = r.M - truth
                rows[name].append(
                    (
                        abs(r.rotation_deg - st.rotation_deg(k)),
                        float(np.hypot(*(d[:, :2] @ centre + d[:, 2]))),
                        float(np.abs(corners @ d[:, :2].T + d[:, 2]).max()),
                    )
                )
    for name, vals in rows.items():
        a = np.array(vals)
        out[name] = {
            "registrations": len(a),
            "rotation_err_deg_max": float(a[:, 0].max()),
            "rotation_err_deg_mean": float(a[:, 0].mean()),
            "translation_err_px_max": float(a[:, 1].max()),
            "translation_err_px_mean": float(a[:, 1].mean()),
            "corner_err_px_max": float(a[:, 2].max()),
            "seconds_per_registration": t[name] / len(a),
        }
    out["size"] = list(size)
    out["stage_angles_deg"] = [0, 15, 30, 45, 60, 75]
    return out


def models(
    work: Path, steps: int, seed: int, n_train: int, n_test: int, size: tuple[int, int], patch: int = 160
) -> dict:
    from benchmarks._segment_eval import scores
    from engine.classes import LUMENSTONE_CATALOGUE
    from engine.segment.card import read_card
    from engine.synth.minerals import ANISOTROPIC
    from engine.synth.xpl import write_xpl_collection
    from engine.train.data import load_split
    from engine.train.loop import TrainOptions, train

    t0 = time.perf_counter()
    ds = write_xpl_collection(work / "xpl_ds", n_train, n_test, size, seed)
    ppl = work / "ppl_ds"
    ppl.mkdir()
    for d in ("imgs", "masks"):
        os.symlink(ds / d, ppl / d)
    synth_s = time.perf_counter() - t0
    result: dict = {
        "train_sections": n_train,
        "test_sections": n_test,
        "size": list(size),
        "steps": steps,
        "patch": patch,
        "arch": "pspnet-resnet18",
        "synth_s": synth_s,
    }
    per_class = {}
    for name, root in (("ppl", ppl), ("ppl_xpl6", ds)):
        t0 = time.perf_counter()
        ckpt = train(
            TrainOptions(
                data=str(root),
                out=str(work / f"model_{name}"),
                arch="pspnet",
                steps=steps,
                patch=patch,
                batch_size=8,
                window=256,
                seed=seed,
            )
        )
        train_s = time.perf_counter() - t0
        s = scores(ckpt, [(x.image, x.mask) for x in load_split(root, "test")])
        aniso = [i for i, c in enumerate(s.codes) if c in ANISOTROPIC]
        per_class[name] = {LUMENSTONE_CATALOGUE[c].name: float(v) for c, v in zip(s.codes, s.iou)}
        result[name] = {
            "channels": read_card(ckpt).in_channels,
            "train_s": train_s,
            "mean_iou": s.mean_iou,
            "pixel_accuracy": s.pixel_accuracy,
            "anisotropic_classes": [LUMENSTONE_CATALOGUE[s.codes[i]].name for i in aniso],
            "anisotropic_mean_iou": float(np.nanmean(s.iou[aniso])),
        }
    result["per_class_iou"] = per_class
    result["anisotropic_iou_gain"] = result["ppl_xpl6"]["anisotropic_mean_iou"] - result["ppl"]["anisotropic_mean_iou"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True, help="output JSON")
    p.add_argument("--stacks", type=int, default=4)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--train", type=int, default=8)
    p.add_argument("--test", type=int, default=3)
    p.add_argument("--size", type=int, nargs=2, default=(384, 512))
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    out: dict = {"registration": registration(args.stacks, (512, 683), args.seed)}
    print(json.dumps(out, indent=1))
    if not args.skip_model:
        with tempfile.TemporaryDirectory() as tmp:
            out["models"] = models(Path(tmp), args.steps, args.seed, args.train, args.test, tuple(args.size))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
