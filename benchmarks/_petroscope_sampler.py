"""Run petroscope's own balancing sampler (``ClassBalancedPatchDataset``, default parameters) on
given image/mask pairs and print per-class pixel tallies as JSON.

Executed by the interpreter of a separate environment that has petroscope installed (see
``benchmarks.sampler``); it imports nothing from Lode. Input: one JSON object on stdin,
``{"pairs": [[image, mask], ...], "patch": int, "patches": int, "seed": int}``.
"""

import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np


def main() -> None:
    args = json.load(sys.stdin)
    from petroscope.segmentation.balancer import ClassBalancedPatchDataset

    t0 = time.perf_counter()
    ds = ClassBalancedPatchDataset(
        img_mask_paths=[(Path(i), Path(m)) for i, m in args["pairs"]], patch_size=args["patch"], seed=args["seed"]
    )
    stream = ds.sampler_balanced()
    _, first = next(stream)
    t1 = time.perf_counter()
    counts = np.bincount(first.ravel(), minlength=256).astype(np.int64)
    for _ in range(args["patches"] - 1):
        _, mask = next(stream)
        counts += np.bincount(mask.ravel(), minlength=256)
    t2 = time.perf_counter()
    json.dump(
        {
            "version": version("petroscope"),
            "pixels": {str(c): int(n) for c, n in enumerate(counts) if n},
            "accumulator": {str(k): int(v) for k, v in ds.accum.accumulator.items()},
            "balancing_quality_own": float(ds.balancing_quality),
            "setup_s": t1 - t0,
            "sample_s": t2 - t1,
            "patches": args["patches"],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
