"""Names inside Lode's OME-Zarr stores: every module that writes or reads a store uses these.

A store holds one image group per section (its pyramid levels ``0``, ``1``, ...); label images
sit under the section's ``labels`` group (``<section>/labels/minerals/0``), and class
probabilities, when stored, are an image group of their own (``<section>/probabilities/0``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import zarr

STORE_NAME = "lode.ome.zarr"
"""The segmentation store inside a ``lode segment`` output folder."""
LABELS_GROUP = "labels"
"""The NGFF container of a section's label images."""
MINERALS = "minerals"
"""The label image ``lode segment`` writes."""
TRUTH = "truth"
"""The label image of synthetic truth (``lode synth``)."""
PROBABILITIES = "probabilities"
"""Per-class probabilities, an image group under the section."""
SEAM_LABELS = "seam_labels"
"""A stitched section's array of which frame each output pixel came from (``lode stitch``)."""
SEAM_REFINED = "seam_refined"
"""A stitched section's full-resolution owner frame of each pixel near its seams, -1 elsewhere."""
FULL_RESOLUTION = "0"
"""Level 0 of a multiscale image: full resolution."""


def level(k: int) -> str:
    """The array name of pyramid level ``k``."""
    return str(k)


def label_path(section: str, name: str = MINERALS, k: int = 0) -> str:
    """``<section>/labels/<name>/<k>``: level ``k`` of a label image, from the store root."""
    return f"{section}/{LABELS_GROUP}/{name}/{level(k)}"


def attrs_of(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    """A store node's attributes as plain JSON data (zarr types each value as a JSON union)."""
    return node.attrs.asdict()


def array_at(group: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path`` under ``group``; ``LodeInputError`` naming it when a group is there."""
    import zarr

    node = group[path]
    if not isinstance(node, zarr.Array):
        raise _wrong_node(group, path, "an array")
    return node


def group_at(group: zarr.Group, path: str) -> zarr.Group:
    """The group at ``path`` under ``group``; ``LodeInputError`` naming it when an array is there."""
    import zarr

    node = group[path]
    if not isinstance(node, zarr.Group):
        raise _wrong_node(group, path, "a group")
    return node


def _wrong_node(group: zarr.Group, path: str, expected: str) -> Exception:
    from engine.errors import LodeInputError

    return LodeInputError(f"{group.store_path}/{path}", f"expected {expected} here")
