"""The README's snippets as user code, type-checked by tests/test_typing.py (mypy --strict):
what a user writes must need no cast and no ``type: ignore``.

Never run (it would write to the user's default root): only checked.
"""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt

import hubzarr as hub


def story(image: npt.NDArray[np.uint8]) -> float:
    big = hub.array((100000, 512, 512, 3), name="test/bigarray:v0", dtype="uint8")
    big[0, :, :, :] = image
    again = hub.load_array("test/bigarray:v0")
    part: npt.NDArray[np.generic] = again[0:10, 100:200, 100:200]
    version: str = hub.tag("test/bigarray:v0", "v1", message="first image")
    old = hub.load_array("test/bigarray:v1", mode="r")
    assert old.read_only and version == old.version
    mean: float = float(part.mean())
    return mean + float(again.lazy[0:10].mean(progress=True))


def refs_and_history() -> list[str]:
    hub.branch("test/bigarray", "experiment")
    hub.delete_branch("test/bigarray", "experiment")
    report = hub.gc("test/bigarray", grace=3600.0, dry_run=True)
    checked = hub.verify("test/bigarray:v1", progress=lambda done, total: None)
    lines = [f"{e.id} {e.time:%Y-%m-%d} {e.message}" for e in hub.log("test/bigarray")]
    summary: hub.RepoSummary = hub.describe("test/bigarray")
    sizes = [f"{s.name} {s.nbytes} {s.versions} {s.last_change}" for s in hub.describe_all()]
    lines += [*sizes, *summary.branches, *summary.tags]
    return [*lines, str(report.bytes), str(checked.ok), *hub.ls("test/")]


def groups(image: npt.NDArray[np.uint8]) -> int:
    g = hub.group("alice/mnist")
    images = g.create_array("images", (60000, 28, 28), dtype="uint8")
    labels = g.create_array("train/labels", (60000,), dtype="int64")
    images[0] = image
    labels[0] = 5
    g.attrs["source"] = "yann.lecun.com"
    same = hub.load_group("alice/mnist:main")
    member = same["train/labels"]
    assert isinstance(member, hub.HubArray)
    return len(g.keys()) + int(member[0])


def elsewhere(root: str) -> tuple[hub.HubArray, int]:
    h = hub.Hub(root, storage_options={"anon": True})
    arr = h.load_array("library/imagenet", mode="r")
    reader = h.reader("library/imagenet:v1")
    entries = asyncio.run(reader.entries())
    stored = sum(entry.size for entry in entries.values())
    raw: bytes | None = asyncio.run(reader.read_object(".zarray"))
    return arr, stored + len(raw or b"")


def errors() -> str:
    try:
        hub.load("no/such")
    except hub.NotFoundError as exc:
        return str(exc)
    except hub.HubError:
        raise
    return ""


def copies() -> tuple[int, float]:
    imported: hub.CopyReport = hub.copy("./train.npy", "alice/train", tag="v0")
    exported = hub.copy("alice/train:v0", "train.zarr", progress=lambda o, n, b, t: None)
    bucket = hub.Hub("s3://bucket/hub")
    copied = hub.copy("alice/train", "alice/train", to_root=bucket)
    try:
        hub.copy("alice/train", "s3://bucket/hub::alice/train")
    except hub.DivergedError as err:
        print(err)
    return imported.objects + exported.objects + copied.versions, exported.seconds
