"""Spawn targets for the garbage-collection tests: a writer and a tagger at work during gc."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def gc_writer(root: str, options: dict[str, Any], name: str, rounds: int, results: Any) -> None:
    """Rewrite every element, partly and wholly, ``rounds`` times; report the final content."""
    import hubzarr

    arr = hubzarr.Hub(root, storage_options=options).load(name)
    expected = np.zeros(arr.shape, dtype=arr.dtype)
    for r in range(1, rounds + 1):
        arr[:] = r * 100  # whole chunks
        arr[r % arr.shape[0]] = r * 100 + 1  # part of one chunk
        expected[:] = r * 100
        expected[r % arr.shape[0]] = r * 100 + 1
    results.put(("writes", expected.tolist()))


def gc_tagger(root: str, options: dict[str, Any], name: str, rounds: int, results: Any) -> None:
    """Tag the branch ``rounds`` times; report each tag's content digest, read right after."""
    import hubzarr

    hub = hubzarr.Hub(root, storage_options=options)
    tags: dict[str, str] = {}
    for r in range(rounds):
        tag = f"t{r}"
        hub.tag(name, tag)
        content = hub.load(f"{name}:{tag}")[:]
        tags[tag] = hashlib.sha256(content.tobytes()).hexdigest()
    results.put(("tags", tags))
