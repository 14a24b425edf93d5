"""Cheap counts the app asks often (an empty studio, an upload that added something)."""

from __future__ import annotations

from .store import Store


def image_count(store: Store) -> int:
    """How many images the collection holds."""
    return int(store.read("SELECT COUNT(*) FROM images")[0][0])
