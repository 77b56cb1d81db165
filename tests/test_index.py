"""The sharded index of layout 3 (hubzarr/index.py): shards against a model dict, roots derived
from a parent and a manifest, what opening and reading cost, layout 2 repositories, damage."""

from __future__ import annotations

import asyncio
import bisect
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from counting import counting_hub
from envelopes import record

import hubzarr
import hubzarr.index as hindex
from hubzarr import FormatError
from hubzarr.index import (
    DictIndex,
    IndexRoot,
    Shard,
    ShardedIndex,
    derive_root,
    is_metadata,
    shard_name,
)
from hubzarr.names import parse_name
from hubzarr.records import Location
from hubzarr.versions import Repository


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards of 4 keys, inline roots of at most 2: every path of the index in a small test."""
    monkeypatch.setattr(hindex, "SHARD_KEYS", 4)
    monkeypatch.setattr(hindex, "INLINE_KEYS", 2)
    hindex.SHARDS.clear()


class _MemoryShards:
    """Shards written by derive_root, read back through a stored copy (as JSON)."""

    scope = "memory"

    def __init__(self) -> None:
        self.stored: dict[str, str] = {}
        self.reads = 0

    async def write(self, name: str, shard: Shard) -> None:
        stored = json.dumps(shard.to_dict())
        if "-" not in name:  # layout 3: named by its content
            assert shard_name(shard.to_dict()) == name
        # A name always means one content: a derivation done again writes the same.
        assert self.stored.setdefault(name, stored) == stored

    async def read_shard(self, name: str) -> Shard:
        self.reads += 1
        return Shard.parse(json.loads(self.stored[name]), name)


def _key(i: int) -> str:
    if i % 11 == 0:
        return f"c/{i}/.zattrs"  # metadata: held by the root itself
    return f"a/{i}.0" if i % 7 else f"b/{i}"


def test_shard_round_trip_and_runs() -> None:
    v1, v2 = Location("0" * 12 + "a" * 8), Location("0" * 12 + "b" * 8, 3)
    items = [("a/0", v1), ("a/1", v1), ("a/2", v2), ("a/3", v1), ("b/.zarray", v2)]
    shard = Shard.from_items(items)
    assert shard.starts == [0, 2, 3, 4] and shard.runs == [0, 1, 0, 1]
    back = Shard.parse(json.loads(json.dumps(shard.to_dict())), "here")
    assert list(back.items()) == items
    assert [back.get(k) for k, _ in items] == [loc for _, loc in items]
    assert back.get("a/") is None and back.get("c") is None
    assert list(back.items("a/")) == items[:4]
    assert list(back.items("a/2")) == [items[2]]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("b\na", "not sorted"),
        ("a\na", "not sorted"),
        ("a\nb//c", "no store could have written"),
        ("a\nb/../c", "no store could have written"),
    ],
)
def test_damaged_keys_are_refused_by_any_answer_that_needs_them(keys: str, message: str) -> None:
    location = Location("0" * 12 + "a" * 8)
    good = Shard.from_items([("a", location)]).to_dict()
    if message != "not sorted":
        # A lookup that finds its key needs neither the order nor the other keys...
        assert Shard.parse({**good, "keys": keys}, "s").get("a") == location
    # ...a miss, a walk and a check do.
    for answer in (lambda s: s.get("zz"), lambda s: list(s.items()), Shard.check):
        with pytest.raises(FormatError, match=message):
            answer(Shard.parse({**good, "keys": keys}, "shards/x.json"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"runs": [1, 0]}, "do not begin"),
        ({"runs": [0, 5]}, "names no location"),
        ({"runs": [0, 0, 0, 0]}, "out of order"),
        ({"runs": [0]}, "pairs"),
        ({"locations": ["nope"]}, "nope"),
    ],
)
def test_damaged_shard_is_refused(change: dict[str, Any], message: str) -> None:
    good = Shard.from_items([("a", Location("0" * 12 + "a" * 8))]).to_dict()
    with pytest.raises(FormatError, match=message):
        Shard.parse({**good, **change}, "shards/x.json")


def test_a_root_is_checked_where_an_answer_needs_it(small_shards: None) -> None:
    """A root (layout 3) whose shards are out of order, list a shard where it does not belong,
    or name a shard with something other than a hex digest: a lookup that finds its key in its
    shard is answered; a miss, a walk and the use of the bad name are refused."""
    store = _MemoryShards()
    v = "0" * 12 + "d" * 8
    keys = [f"k{i:02}" for i in range(12)]  # three shards of four

    async def run() -> None:
        changes: dict[str, Location | None] = {k: Location(v) for k in keys}
        root = await derive_root(v, None, changes, store.write, by_writer=False)
        stored = root.to_dict()
        firsts = stored["firsts"].split("\n")
        assert firsts == ["k00", "k04", "k08"]

        def parsed(**change: Any) -> ShardedIndex:
            return ShardedIndex(IndexRoot.parse({**stored, **change}, "index/r.json", v), store)

        good = parsed()
        assert [await good.get(k) for k in ["k05", "k99", "a"]] == [Location(v), None, None]
        # Out of order: shards 1 and 2 swapped, with their names.
        names = [stored["shards"][i * 32 : (i + 1) * 32] for i in range(3)]
        swapped = {"firsts": "k00\nk08\nk04", "shards": names[0] + names[2] + names[1]}
        assert await parsed(**swapped).get("k00") == Location(v)
        with pytest.raises(FormatError, match=r"index/r\.json has shards out of order"):
            await parsed(**swapped).get("k02x")
        with pytest.raises(FormatError, match="out of order"):
            await parsed(**swapped).mapping()
        # A shard listed where it does not hold those keys.
        moved = {"shards": names[1] + names[0] + names[2]}
        with pytest.raises(FormatError, match="where it does not hold those keys"):
            await parsed(**moved).get("k01")
        # A name that is no digest is refused before it becomes a path.
        bad = parsed(shards=names[0] + "../../../../etc/passwd".ljust(32, "x") + names[2])
        assert await bad.get("k01") == Location(v)
        with pytest.raises(FormatError, match="not a hex digest"):
            await bad.get("k05")

    asyncio.run(run())


def test_first_lookups_in_the_stored_strings_match_lookups_in_lists() -> None:
    """A root's first lookups bisect its joined first keys, and a shard's first lookups find
    their key in its joined keys, neither splitting them (then they split them): all answer as
    a bisection of the lists would, for keys that are prefixes of each other, below the first,
    past the last."""
    rng = random.Random(11)
    v1, v2 = Location("0" * 12 + "a" * 8), Location("0" * 12 + "b" * 8, 2)
    for trial in range(300):
        pool = {
            "/".join(
                rng.choice(["a", "b", "a1", "0", "z9", "a.1"]) for _ in range(rng.randint(1, 3))
            )
            for _ in range(rng.randint(1, 40))
        }
        keys = sorted(pool)
        probes = [*keys, "", "0", "~", *(k + suffix for k in keys for suffix in ("/", "0", "."))]
        root = IndexRoot.parse(
            {
                "version": "v",
                "count": len(keys),
                "meta": Shard.from_items([]).to_dict(),
                "firsts": "\n".join(keys),
                "shards": "0" * 32 * len(keys),
            },
            "r",
            "v",
        )
        fresh = IndexRoot.parse(root.to_dict(), "r", "v")
        for n, probe in enumerate(rng.sample(probes, len(probes))):
            if n % 12 == 0:
                fresh = IndexRoot.parse(root.to_dict(), "r", "v")  # a first lookup again
            i = fresh.shard_of(probe)
            assert i == max(bisect.bisect_right(keys, probe) - 1, 0), (keys, probe)
            assert fresh.first(i) == keys[i]
            if i + 1 < len(keys):
                assert fresh.first(i + 1) == keys[i + 1]
        locations = [rng.choice([v1, v2]) for _ in keys]
        stored = Shard.from_items(zip(keys, locations, strict=True)).to_dict()
        shard = Shard.parse(stored, "s")
        for n, probe in enumerate(rng.sample(probes, len(probes))):
            if n % 12 == 0:
                shard = Shard.parse(stored, "s")
            expected = locations[keys.index(probe)] if probe in keys else None
            assert shard.get(probe) == expected, (trial, keys, probe)
            assert len(shard) == len(keys)


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ([0, 0, 2], "runs of other than its 3 shards"),
        ([0, 0, 4], "runs of other than its 3 shards"),
        ([0, 0, 1, 1, 0, 2], "names no writer"),
        ([0, 0, 3, 0, 5, 0], "holds no shard"),
        ([0, 0], "triples"),
        ([0, -1, 3], "triples"),
        ([0, True, 3], "triples"),
    ],
)
def test_a_damaged_layout_4_root_is_refused(
    small_shards: None, runs: list[Any], message: str
) -> None:
    store = _MemoryShards()
    v = "0" * 12 + "e" * 8

    async def run() -> dict[str, Any]:
        changes: dict[str, Location | None] = {f"k{i:02}": Location(v) for i in range(12)}
        return (await derive_root(v, None, changes, store.write)).to_dict()

    stored = asyncio.run(run())
    assert (stored["writers"], stored["runs"]) == ([v], [0, 0, 3])  # one run of three shards
    with pytest.raises(FormatError, match=message):
        IndexRoot.parse({**stored, "runs": runs}, "r", v)
    for writers in (["../../etc"], [v.upper()], "x", [v + "0"]):
        with pytest.raises(FormatError, match="writers that are not version ids"):
            IndexRoot.parse({**stored, "writers": writers}, "r", v)


@pytest.mark.parametrize("by_writer", [True, False], ids=["layout 4", "layout 3"])
def test_derived_roots_match_a_model_and_share_untouched_shards(
    small_shards: None, by_writer: bool
) -> None:
    rng = random.Random(7)
    versions = [f"{n:012x}" + "c" * 8 for n in range(1, 40)]
    store = _MemoryShards()

    async def run() -> None:
        model: dict[str, Location] = {}
        parent: ShardedIndex | DictIndex | None = None
        for version in versions:
            changes: dict[str, Location | None] = {}
            for _ in range(rng.choice([1, 2, 5, 30])):
                key = _key(rng.randrange(60))
                changes[key] = None if rng.random() < 0.3 else Location(version, rng.randrange(2))
            root = await derive_root(version, parent, changes, store.write, by_writer=by_writer)
            for key, location in changes.items():
                if location is None:
                    model.pop(key, None)
                else:
                    model[key] = location
            # The stored form parses back to itself, and derivation is deterministic.
            again = IndexRoot.parse(json.loads(json.dumps(root.to_dict())), "r", version)
            assert again == root
            again = await derive_root(version, parent, changes, store.write, by_writer=by_writer)
            assert again == root
            index = ShardedIndex(root, store)
            assert index.count == len(model)
            assert await index.mapping() == model
            for i in range(60):
                assert await index.get(_key(i)) == model.get(_key(i))
            assert await index.keys("b/") == {k for k in model if k.startswith("b/")}
            if root.inline is None:
                assert all(len(store.stored[root.name(i)]) for i in range(root.shards))
                if isinstance(parent, ShardedIndex) and parent.root.inline is None:
                    # Only shards holding a changed key are new.
                    touched = {parent.root.shard_of(k) for k in changes if not is_metadata(k)}
                    kept = {parent.root.name(i) for i in range(parent.root.shards)} - {
                        parent.root.name(i) for i in touched
                    }
                    names = {root.name(i) for i in range(root.shards)}
                    assert kept <= names
                    assert len(names - kept) <= len(touched) * 3
                    if by_writer:  # new shards are the version's, numbered from 0
                        numbers = sorted(int(n.split("-")[1]) for n in names - kept)
                        assert numbers == list(range(len(numbers)))
                        assert all(n.startswith(f"{version}-") for n in names - kept)
                        # The names come as runs: one per stretch of a writer's shards.
                        assert len(root.writers) <= len(root.run_starts) <= root.shards
            parent = index

    asyncio.run(run())


def _fill(hub: hubzarr.Hub, name: str, chunks: int) -> hubzarr.HubArray:
    arr = hub.array((chunks,), name, chunks=(1,), dtype="i4")
    arr[:] = np.arange(chunks, dtype="i4")
    return arr


def test_open_reads_the_root_and_one_chunk_reads_one_shard(
    local_root: str, small_shards: None
) -> None:
    hub, counter = counting_hub(local_root)
    _fill(hub, "alice/big", 3 * hindex.SHARD_KEYS)
    hub.tag("alice/big", "v1")
    hindex.SHARDS.clear()
    counter.reset()
    arr = hub.load_array("alice/big:v1")
    opened = [p for op, p in counter.paths if op == "read"]
    assert not any("/shards/" in p for p in opened)
    assert sum("/index/" in p for p in opened) == 1
    counter.reset()
    # Keys sort by code point: 0 1 10 11 | 2 3 4 5 | 6 7 8 9, in shards of 4.
    assert arr[9] == 9
    read = [p for op, p in counter.paths if op == "read"]
    assert sum("/shards/" in p for p in read) == 1 and sum("/data/" in p for p in read) == 1
    counter.reset()
    assert arr[8] == 8  # the shard is held
    assert [p for op, p in counter.paths if op == "read" and "/shards/" in p] == []
    np.testing.assert_array_equal(arr[:], np.arange(3 * hindex.SHARD_KEYS))


def test_a_tag_after_one_change_writes_one_shard(local_root: str, small_shards: None) -> None:
    hub, counter = counting_hub(local_root)
    arr = _fill(hub, "alice/big", 3 * hindex.SHARD_KEYS)
    hub.tag("alice/big", "v1")
    arr[7] = -1
    counter.reset()
    hub.tag("alice/big", "v2")
    created = [p for op, p in counter.paths if op == "create"]
    assert sum("/shards/" in p for p in created) == 1
    assert hub.load_array("alice/big:v2")[7] == -1
    assert hub.load_array("alice/big:v1")[7] == 7
    # The other shards are the tag before's.
    repo = Repository(hub.storage, parse_name("alice/big", default_user="alice"))

    async def roots() -> tuple[IndexRoot, IndexRoot]:
        await repo.open()
        one, two = (await repo.resolve("v1")).version, (await repo.resolve("v2")).version
        a, b = await repo.index_root(one), await repo.index_root(two)
        assert a is not None and b is not None
        return a, b

    one, two = asyncio.run(roots())
    assert (
        one.shards == two.shards and sum(one.name(i) != two.name(i) for i in range(one.shards)) == 1
    )


def test_a_missing_root_is_derived_again_identically(local_root: str, small_shards: None) -> None:
    hub = hubzarr.Hub(local_root)
    _fill(hub, "alice/big", 2 * hindex.SHARD_KEYS + 3)
    version = hub.tag("alice/big", "v1")
    files = list(Path(local_root).glob(f"alice/big/*/index/{version}.json"))
    assert len(files) == 1
    before = files[0].read_bytes()
    files[0].unlink()  # a finisher killed after the manifest
    hindex.SHARDS.clear()
    arr = hubzarr.Hub(local_root).load_array("alice/big:v1")
    assert arr[2 * hindex.SHARD_KEYS + 2] == 2 * hindex.SHARD_KEYS + 2
    assert files[0].read_bytes() == before


def test_a_damaged_shard_is_a_format_error(local_root: str, small_shards: None) -> None:
    hub = hubzarr.Hub(local_root)
    _fill(hub, "alice/big", 2 * hindex.SHARD_KEYS)
    hub.tag("alice/big", "v1")
    shards = sorted(Path(local_root).glob("alice/big/*/shards/*.json"))
    assert shards
    for shard in shards:
        shard.write_bytes(shard.read_bytes().replace(b'"keys":"', b'"keys":"0'))
    hindex.SHARDS.clear()
    arr = hubzarr.Hub(local_root).load_array("alice/big:v1")
    with pytest.raises(FormatError, match="shards/"):
        arr[5]
    for shard in shards:
        shard.unlink()
    hindex.SHARDS.clear()
    with pytest.raises(FormatError, match="is missing"):
        hubzarr.Hub(local_root).load_array("alice/big:v1")[5]


def test_layout_2_repositories_still_open_and_take_tags(
    local_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubzarr import versions

    with monkeypatch.context() as old:
        old.setattr(versions, "LAYOUT", 2)
        hub = hubzarr.Hub(local_root)
        arr = _fill(hub, "alice/old", 300)
        hub.tag("alice/old", "v1")
    folder = Path(local_root, "alice/old")
    assert json.loads((folder / "repo.json").read_text())["layout"] == 2
    hub = hubzarr.Hub(local_root)
    arr = hub.load_array("alice/old")
    np.testing.assert_array_equal(hub.load_array("alice/old:v1")[:], np.arange(300))
    arr[3] = -3
    hub.tag("alice/old", "v2")
    assert hub.load_array("alice/old:v2")[3] == -3
    assert not list(folder.glob("*/index")) and not list(folder.glob("*/shards"))
    assert json.loads((folder / "repo.json").read_text())["layout"] == 2


def test_layout_3_repositories_keep_naming_shards_by_content(
    local_root: str, monkeypatch: pytest.MonkeyPatch, small_shards: None
) -> None:
    """A repository made with layout 3 is read and written as layout 3 (its shards named by
    the hash of their content) and copied as such."""
    from hubzarr import versions

    with monkeypatch.context() as old:
        old.setattr(versions, "LAYOUT", 3)
        hub = hubzarr.Hub(local_root)
        _fill(hub, "alice/three", 3 * hindex.SHARD_KEYS)
        hub.tag("alice/three", "v1")
    hub = hubzarr.Hub(local_root)
    arr = hub.load_array("alice/three")
    arr[5] = -5
    hub.tag("alice/three", "v2")
    hub.copy("alice/three", "alice/copy")
    for name in ("alice/three", "alice/copy"):
        folder = Path(local_root, name)
        assert json.loads((folder / "repo.json").read_text())["layout"] == 3
        shards = [p.stem for p in folder.glob("*/shards/*.json")]
        assert len(shards) == 4 and all(len(s) == 32 and "-" not in s for s in shards)
        roots = [json.loads(p.read_text()) for p in folder.glob("*/index/*.json")]
        assert roots and all("writers" not in r for r in roots)
        hindex.SHARDS.clear()
        expected = np.arange(3 * hindex.SHARD_KEYS)
        np.testing.assert_array_equal(hubzarr.Hub(local_root).load_array(f"{name}:v1")[:], expected)
        expected[5] = -5
        np.testing.assert_array_equal(hubzarr.Hub(local_root).load_array(f"{name}:v2")[:], expected)


@pytest.mark.parametrize("layout", [3, 4])
def test_gc_frees_shards_only_collected_versions_named(
    local_root: str, monkeypatch: pytest.MonkeyPatch, small_shards: None, layout: int
) -> None:
    import time

    import hubzarr.collect
    from hubzarr import versions

    monkeypatch.setattr(versions, "LAYOUT", layout)
    hub = hubzarr.Hub(local_root)
    _fill(hub, "alice/big", 2 * hindex.SHARD_KEYS)
    hub.tag("alice/big", "v1")
    hub.branch("alice/big:v1", "side")
    hub.load_array("alice/big:side")[3] = -3
    hub.tag("alice/big:side", "t")
    shards = set(Path(local_root).glob("alice/big/*/shards/*.json"))
    assert len(shards) == 3  # v1's two, and t's rewrite of one
    hub.delete_tag("alice/big", "t")
    hub.delete_branch("alice/big", "side")
    monkeypatch.setattr(hubzarr.collect, "_now", lambda: time.time() + 7200)
    hub.gc("alice/big", grace=0, dry_run=False)
    left = set(Path(local_root).glob("alice/big/*/shards/*.json"))
    assert len(left) == 2 and left < shards
    assert not list(Path(local_root).glob("alice/big/*/index/*.json.*"))
    np.testing.assert_array_equal(hub.load_array("alice/big:v1")[:5], [0, 1, 2, 3, 4])
    hindex.SHARDS.clear()
    np.testing.assert_array_equal(
        hubzarr.Hub(local_root).load_array("alice/big:v1")[:], np.arange(2 * hindex.SHARD_KEYS)
    )


def test_a_group_lists_its_members_from_the_root_alone(local_root: str, small_shards: None) -> None:
    hub, counter = counting_hub(local_root)
    g = hub.group("alice/grp")
    g.create_array("images", (40,), dtype="uint8", chunks=(1,))[:] = 1
    g.create_array("train/labels", (40,), dtype="uint8", chunks=(1,))[:] = 2
    hub.tag("alice/grp", "v1")
    hindex.SHARDS.clear()
    counter.reset()
    group = hub.load_group("alice/grp:v1")
    assert group.keys() == ["images", "train"]
    assert sorted(group["train"].keys()) == ["labels"]
    assert not [p for _, p in counter.paths if "/shards/" in p]
    assert group["train/labels"][39] == 2
    assert len({p for _, p in counter.paths if "/shards/" in p}) == 1


def test_a_copy_carries_roots_and_shards(
    local_root: str, tmp_path: Path, small_shards: None
) -> None:
    hub = hubzarr.Hub(local_root)
    arr = _fill(hub, "alice/big", 3 * hindex.SHARD_KEYS)
    hub.tag("alice/big", "v1")
    arr[7] = -7
    hub.tag("alice/big", "v2")
    other = hubzarr.Hub(str(tmp_path / "other"))
    hub.copy("alice/big", "alice/big", to_root=other)
    source = sorted(p.name for p in Path(local_root).glob("alice/big/*/shards/*.json"))
    copied = sorted(p.name for p in (tmp_path / "other").glob("alice/big/*/shards/*.json"))
    assert copied == source
    roots = {p.name for p in (tmp_path / "other").glob("alice/big/*/index/*.json")}
    assert roots == {p.name for p in Path(local_root).glob("alice/big/*/index/*.json")}
    hindex.SHARDS.clear()
    np.testing.assert_array_equal(
        other.load_array("alice/big:v2")[:], [*range(7), -7, *range(8, 3 * hindex.SHARD_KEYS)]
    )


def test_concurrent_lookups_read_each_shard_once(small_shards: None) -> None:
    store = _MemoryShards()
    version = "0" * 12 + "d" * 8
    changes: dict[str, Location | None] = {f"a/{i:03}": Location(version) for i in range(40)}

    async def run() -> None:
        root = await derive_root(version, None, changes, store.write)
        assert root.shards == 10
        hindex.SHARDS.clear()
        index = ShardedIndex(root, store)
        found = await asyncio.gather(*(index.get(k) for k in [*changes, *changes]))
        assert found == [Location(version)] * 80
        assert store.reads == 10  # one per shard, however many lookups waited for it
        assert await index.get("a/999") is None and await index.get("0") is None

    asyncio.run(run())


def test_a_branch_file_hints_where_its_head_started(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    arr = _fill(hub, "alice/big", 20)
    v1 = hub.tag("alice/big", "v1")
    hub.branch("alice/big:v1", "dev")
    [main] = Path(local_root).glob("alice/big/*/refs/branches/main.json")
    [dev] = Path(local_root).glob("alice/big/*/refs/branches/dev.json")
    assert json.loads(main.read_text())["base"] == v1  # moved by the seal of v1
    assert json.loads(dev.read_text())["base"] == v1  # created from v1
    arr[0] = -1
    v2 = hub.tag("alice/big", "v2")
    assert json.loads(main.read_text())["base"] == v2
    # A wrong hint (another version), or none, costs a read, never a wrong answer.
    for change in ({"base": v1}, {}):
        data = {k: v for k, v in json.loads(main.read_text()).items() if k not in ("base",)}
        main.write_bytes(record(main, {**data, **change}))
        hindex.SHARDS.clear()
        fresh = hubzarr.Hub(local_root).load_array("alice/big")
        np.testing.assert_array_equal(fresh[:3], [-1, 1, 2])
