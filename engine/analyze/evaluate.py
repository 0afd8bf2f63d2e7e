"""Score a segmentation store against truth: mask files or a store with truth label images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from engine.analyze.metrics import SegmentationScores
from engine.classes import LUMENSTONE_CATALOGUE
from engine.errors import LodeInputError
from engine.io.images import IMAGE_SUFFIXES, read_mask
from engine.io.integrity import check_raster, read_checked
from engine.io.layout import FULL_RESOLUTION, LABELS_GROUP, MINERALS, TRUTH, label_path
from engine.io.ome import VOID


def _open(path: Path, what: str):
    import zarr

    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise LodeInputError(path, f"cannot open the {what} store: {exc}") from exc


def _truth_reader(truth: Path):
    """``section -> truth labels``: from ``<truth>/<section>/labels/truth/0`` of a zarr store, or from
    the mask file named after the section anywhere under a folder (``masks/test/<section>.png``)."""
    if (truth / "zarr.json").is_file() or (truth / ".zgroup").is_file():
        store = _open(truth, "truth")

        def from_store(section: str) -> np.ndarray:
            key = label_path(section, TRUTH)
            if key not in store:
                raise LodeInputError(truth, f"no truth labels {key!r} for section {section!r}")
            return _known_codes(np.asarray(store[key][:]), f"{truth}/{key}")

        return from_store
    if not truth.is_dir():
        raise LodeInputError(truth, "truth folder or store not found")
    files: dict[str, Path] = {}
    for p in sorted(truth.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            files.setdefault(p.stem, p)

    def from_files(section: str) -> np.ndarray:
        if section not in files:
            raise LodeInputError(
                truth, f"no mask named {section}.png (or another image suffix) for section {section!r}"
            )
        return _known_codes(read_mask(files[section]), files[section])

    return from_files


def _known_codes(mask: np.ndarray, source: str | Path) -> np.ndarray:
    """``mask``, when each of its codes is a catalogue class or void; else ``LodeInputError`` naming it."""
    unknown = sorted(set(np.unique(mask).tolist()) - set(LUMENSTONE_CATALOGUE) - {VOID})
    if unknown:
        raise LodeInputError(
            source,
            f"unknown class code{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(str, unknown))} in the truth (known: {sorted(LUMENSTONE_CATALOGUE)}, "
            f"{VOID} = void)",
        )
    return mask


def _pairs(
    pred: Path, truth: Path, allow_incomplete: bool, incomplete: dict[str, int]
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    store = _open(pred, "prediction")
    read_truth = _truth_reader(truth)
    sections = sorted(k for k, g in store.groups() if f"{LABELS_GROUP}/{MINERALS}/{FULL_RESOLUTION}" in g)
    if not sections:
        raise LodeInputError(pred, f"no section with {LABELS_GROUP}/{MINERALS} in the store")
    for s in sections:
        group = store[f"{s}/{LABELS_GROUP}/{MINERALS}"]
        level0 = group[FULL_RESOLUTION]
        missing = check_raster(group, level0, f"{pred}/{s}", allow_incomplete)
        if missing:
            incomplete[s] = len(missing)
        p = read_checked(level0, (slice(None), slice(None)), str(pred))
        t = read_truth(s)
        if t.shape != p.shape:
            raise LodeInputError(truth, f"truth of section {s!r} is {t.shape}, prediction {p.shape}")
        yield s, t, p


def _restrict(full: SegmentationScores, codes: Sequence[int]) -> SegmentationScores:
    """Scores over ``codes`` from scores over every code: other predictions count as wrong."""
    idx = [full.codes.index(c) for c in codes]
    rows = full.confusion[idx]
    sub = rows[:, idx]
    return SegmentationScores(list(codes), np.concatenate([sub, (rows.sum(1) - sub.sum(1))[:, None]], axis=1))


def evaluate_store(
    pred: str | Path,
    truth: str | Path,
    codes: Sequence[int] | None = None,
    void_border: int = 0,
    void_code: int = VOID,
    allow_incomplete: bool = False,
    incomplete: dict[str, int] | None = None,
) -> tuple[SegmentationScores, dict[str, SegmentationScores]]:
    """Dataset-level scores (intersections and unions summed over every section) and per-section scores.

    Sections are read one at a time. Args:
        codes: class codes scored; default every code found in the truth or the prediction.
        void_border: width of the band around truth class boundaries left out of every count.
        allow_incomplete: score the written blocks of incomplete sections (else they are refused);
            ``incomplete`` then receives section → number of blocks left out.
    """
    incomplete = {} if incomplete is None else incomplete
    every = [c for c in range(256) if c != void_code]
    total = SegmentationScores.empty(every)
    per: dict[str, SegmentationScores] = {}
    found: set[int] = set()
    for s, t, p in _pairs(Path(pred), Path(truth), allow_incomplete, incomplete):
        one = SegmentationScores.empty(every)
        one.add(t, p, valid=p != VOID, void_border=void_border)
        per[s] = one
        total.confusion += one.confusion
        if codes is None:
            found.update(np.unique(t).tolist())
            found.update(np.unique(p).tolist())
    codes = sorted(found - {void_code}) if codes is None else list(codes)
    return _restrict(total, codes), {s: _restrict(v, codes) for s, v in per.items()}
