"""Which JSON file gives an image a metadata field (BIDS inheritance), for messages.

pybids merges an image's metadata from every applicable JSON file (its own sidecar and the
sidecars higher up or with fewer entities), so a bad value may sit in a file other than the
image's own sidecar. Messages about metadata name both: the image, and the JSON to edit.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["holder_of", "own_sidecar", "MetaSource", "json_text"]


def own_sidecar(image: Path | str) -> Path:
    """The image's own JSON sidecar (the same name with ``.json``)."""
    image = Path(image)
    name = image.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return image.with_name(name[: -len(ext)] + ".json")
    return image.with_name(name + ".json")


def holder_of(image: Path, key: str, root: Path) -> Path | None:
    """The JSON file that gives ``key`` to ``image`` under BIDS inheritance (nearest first)."""
    image, root = Path(image), Path(root)
    name = image.name.split(".")[0]
    parts = name.split("_")
    suffix, entities = parts[-1], set(parts[:-1])
    folder = image.parent
    while True:
        candidates = []
        for f in folder.glob(f"*_{suffix}.json") if folder.is_dir() else ():
            ents = f.name[:-5].split("_")[:-1]
            if set(ents) <= entities:
                candidates.append((-len(ents), f))
        for _, f in sorted(candidates):
            try:
                if key in json.loads(f.read_text(encoding="utf-8")):
                    return f
            except (OSError, ValueError):
                continue
        if folder == root or root not in folder.parents:
            return None
        folder = folder.parent


class MetaSource(str):
    """An image's path as shown in messages (relative to the dataset), that also knows which
    JSON file holds each of its metadata fields.

    It is a ``str`` so that every function taking a ``where`` text takes it unchanged; those
    that report a bad value call :meth:`json_for` to name the file to edit.
    """
    image: Path
    root: Path | None

    def __new__(cls, image: Path | str, root: Path | str | None = None):
        image = Path(image)
        shown = str(image)
        if root is not None:
            try:
                shown = str(image.relative_to(root))
            except ValueError:
                pass
        obj = super().__new__(cls, shown)
        obj.image, obj.root = image, (Path(root) if root is not None else None)
        return obj

    def json_for(self, key: str) -> str:
        """The JSON file (relative to the dataset) holding ``key``; the own sidecar if none."""
        found = holder_of(self.image, key, self.root) if self.root is not None else None
        path = found or own_sidecar(self.image)
        if self.root is not None:
            try:
                return str(path.relative_to(self.root))
            except ValueError:
                pass
        return str(path)


def json_text(where, key: str) -> str:
    """``" (in <json>)"`` naming the JSON that holds ``key`` when ``where`` knows it, else ``""``."""
    json_for = getattr(where, "json_for", None)
    return f" (in {json_for(key)})" if json_for else ""
