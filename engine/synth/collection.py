"""Writers for synthetic collections: the LumenStone layout and whole panoramas in OME-Zarr."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import zarr

from engine.classes import LUMENSTONE, ClassSet
from engine.io.images import write_image
from engine.io.integrity import mark_complete
from engine.io.layout import TRUTH
from engine.io.ome import PyramidLayout, create_image, create_labels, write_block
from engine.synth.section import Section, SectionSpec


def write_lumenstone(
    root: str | Path,
    n_train: int = 8,
    n_test: int = 2,
    size: tuple[int, int] = (768, 1024),
    associations: Iterable[str] = ("S1", "S2"),
    seed: int = 0,
    grain_diameter: float = 60.0,
) -> Path:
    """Write ``imgs/{train,test}/*.png`` and ``masks/{train,test}/*.png`` (mask pixel = class code)."""
    root = Path(root)
    assoc = list(associations)
    index = []
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 10_000)):
        (root / "imgs" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = assoc[i % len(assoc)]
            spec = SectionSpec(seed=seed * 100_003 + offset + i, association=a, grain_diameter=grain_diameter)
            rgb, lab = Section(spec).render(0, 0, size[0], size[1])
            name = f"{a}_{split}_{i:03d}"
            write_image(root / "imgs" / split / f"{name}.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            write_image(root / "masks" / split / f"{name}.png", lab)
            index.append({"name": name, "split": split, "association": a, "seed": spec.seed})
    (root / "synth.json").write_text(json.dumps({"seed": seed, "size": list(size), "images": index}, indent=1))
    return root


def write_panorama(
    store: str | Path | zarr.Group,
    section_id: str,
    height: int,
    width: int,
    spec: SectionSpec,
    layout: PyramidLayout | None = None,
    classes: ClassSet = LUMENSTONE,
    pixel_size_um: float = 0.5,
    progress: bool = False,
) -> zarr.Group:
    """Render a whole panorama block by block into ``store/<section_id>`` with its truth labels."""
    root = store if isinstance(store, zarr.Group) else zarr.open_group(str(store), mode="a")
    layout = layout or PyramidLayout((1024, 1024), chunk=512, levels=3)
    img = create_image(
        root,
        section_id,
        (3, height, width),
        layout,
        channel_names=["R", "G", "B"],
        pixel_size_um=pixel_size_um,
        overwrite=True,
        attributes={"synth": {"seed": spec.seed, "association": spec.association}},
    )
    lab = create_labels(img, TRUTH, classes, layout, pixel_size_um=pixel_size_um, overwrite=True)
    section = Section(spec)
    by, bx = layout.block
    blocks = [(y0, x0) for y0 in range(0, height, by) for x0 in range(0, width, bx)]
    if progress:
        from tqdm import tqdm

        blocks = tqdm(blocks, desc=f"synth {section_id}", unit="block")
    for y0, x0 in blocks:
        h, w = min(by, height - y0), min(bx, width - x0)
        rgb, labels = section.render(y0, x0, h, w)
        write_block(img, np.moveaxis(rgb, -1, 0), y0, x0, "image")
        write_block(lab, labels, y0, x0, "label")
    mark_complete(lab)
    mark_complete(img)
    return img
