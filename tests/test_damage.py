"""Damaged repositories: every problem in a stored record, metadata file or chunk is one error
of hubzarr's tree naming the file or key, and no damage makes an operation hang.

Records are damaged by editing their JSON files in a local root, as an outside editor would;
chunks and metadata through the library's own store (``HubStore.set``), which frames whatever
payload it is given, so none of these tests depends on the envelope's format.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
from envelopes import record
from zarr.core.buffer import default_buffer_prototype

import hubzarr
import hubzarr.versions
from hubzarr import records
from hubzarr.errors import CorruptChunkError, FormatError, InvalidArgumentError
from hubzarr.metadata import MAX_ATTRIBUTE_DEPTH, encode_attributes

NAME = "dmg/arr"
#: Nested so deep that json's decoder gives up (RecursionError) long before the end.
DEEP = b"[" * 100_000 + b"]" * 100_000
#: Seconds an operation on a damaged repository may take before it counts as hanging.
HANG_S = 120


# -- helpers -------------------------------------------------------------------------------


def _history(local_root: str) -> tuple[hubzarr.Hub, dict[str, str]]:
    """An array with two tags on main and a branch ``dev`` with two tags of its own.

    Returns the hub and the version ids: ``v1``, ``v2`` (main's tags), ``d1``, ``d2`` (dev's)
    and ``head`` (main's open head).
    """
    hub = hubzarr.Hub(local_root)
    arr = hub.array((8, 4), name=NAME, dtype="float32", chunks=(2, 4))
    arr[:] = 1
    ids = {"v1": hub.tag(NAME, "v1", message="one")}
    arr[:] = 2
    ids["v2"] = hub.tag(NAME, "v2")
    hub.branch(f"{NAME}:v1", "dev")
    dev = hub.load(f"{NAME}:dev")
    assert isinstance(dev, hubzarr.HubArray)
    dev[0] = 3
    ids["d1"] = hub.tag(f"{NAME}:dev", "d1")
    dev[1] = 4
    ids["d2"] = hub.tag(f"{NAME}:dev", "d2")
    ids["head"] = hub.load(NAME).version
    return hub, ids


@pytest.fixture(params=[2, 4], ids=["layout 2", "layout 4"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Repositories made in each layout hubzarr writes: layout 2 builds a version's index
    from its records and manifests at every open, layout 4 only where its root is missing."""
    monkeypatch.setattr(hubzarr.versions, "LAYOUT", request.param)
    return int(request.param)


def _rootless(local_root: str, *versions: str) -> None:
    """Remove the index roots of ``versions`` (layouts 3, 4), as a sealer killed after its
    manifest would leave them: the next reader derives them from the records damaged here."""
    for version in versions:
        for path in Path(local_root, NAME).glob(f"*/index/{version}.json"):
            path.unlink()


def _record(local_root: str, relative: str) -> Path:
    """The file ``<incarnation>/<relative>`` of the repository (``relative`` may be a glob)."""
    [path] = Path(local_root, NAME).glob(f"*/{relative}")
    return path


def _edit(local_root: str, relative: str, change: Callable[[dict[str, Any]], None]) -> Path:
    path = _record(local_root, relative)
    data = json.loads(path.read_text())
    change(data)
    path.write_bytes(record(path, data))
    return path


def _files(root: str) -> dict[str, bytes]:
    """Every file under a local root, with its bytes."""
    return {str(p): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _outcome(local_root: str, code: str) -> tuple[str, str]:
    """Run ``code`` (with ``hub`` and ``NAME`` defined) in a fresh process; return the name
    and message of what it raised, or ``("ok", "")``.

    A separate process, so that an operation that never ends fails this test (the process is
    killed after :data:`HANG_S`) instead of hanging the test run.
    """
    script = textwrap.dedent(
        f"""
        import json, sys
        import hubzarr
        hub = hubzarr.Hub(sys.argv[1])
        NAME = {NAME!r}
        try:
            {code}
        except Exception as exc:
            print(json.dumps([type(exc).__name__, str(exc)]))
        else:
            print(json.dumps(["ok", ""]))
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, local_root],
            capture_output=True,
            text=True,
            timeout=HANG_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{code} did not finish in {HANG_S} s: a walk of damaged history never ends")
    assert done.returncode == 0, done.stderr
    kind, message = json.loads(done.stdout.strip().splitlines()[-1])
    return str(kind), str(message)


def _set(hub: hubzarr.Hub, key: str, payload: bytes, name: str = NAME) -> None:
    """Store ``payload`` as ``key`` at the head of ``name``, through the library's own store:
    a valid envelope around whatever bytes, as another zarr writer would leave them."""
    store = hub.store(name, mode="r+")
    store.set_sync(key, default_buffer_prototype().buffer.from_bytes(payload))


def _get(hub: hubzarr.Hub, key: str, name: str = NAME) -> bytes:
    buffer = hub.store(name).get_sync(key)
    assert buffer is not None
    return buffer.to_bytes()


# -- cycles and bounds: nothing stored makes a walk of history endless ---------------------


def test_a_cycle_of_parents_is_a_format_error_not_an_endless_log(local_root: str) -> None:
    _, ids = _history(local_root)
    # The first version's parent is now its grandchild, consistently (chain included).
    path = _edit(
        local_root,
        f"versions/{ids['v1']}.json",
        lambda d: d.update(parent=ids["v2"], chain=[ids["v2"]]),
    )
    for code in ("hub.log(NAME)", "hub.log(NAME + ':v2')", "hub.log(NAME + ':dev')"):
        kind, message = _outcome(local_root, code)
        assert kind == "FormatError", (code, kind, message)
        assert "cycle" in message and path.name in message, message


@pytest.mark.parametrize("lead", ["itself", "its child"])
def test_a_version_that_is_its_own_ancestor_is_refused_when_read(
    local_root: str, lead: str, layout: int
) -> None:
    _, ids = _history(local_root)
    _rootless(local_root, ids["v1"])
    parent = ids["v1"] if lead == "itself" else ids["v2"]
    # Parent only: the chain still says the version has none, which is damage too.
    changes: dict[str, Any] = {"parent": parent}
    if lead == "itself":
        changes["chain"] = [parent]
    path = _edit(local_root, f"versions/{ids['v1']}.json", lambda d: d.update(changes))
    for code in ("hub.log(NAME + ':v1')", "hub.load(NAME + ':v1')[:]"):
        kind, message = _outcome(local_root, code)
        assert kind == "FormatError", (code, kind, message)
        assert path.name in message, message


def _seal_cycle(local_root: str) -> tuple[dict[str, str], list[Path]]:
    """Make dev's two seals name each other as successor, and dev point at the first."""
    _, ids = _history(local_root)
    d1, d2 = ids["d1"], ids["d2"]
    paths = [
        _edit(local_root, f"seals/{d1}.json", lambda d: d.update(successor=d2)),
        _edit(local_root, f"seals/{d2}.json", lambda d: d.update(successor=d1)),
    ]
    _edit(local_root, "refs/branches/dev.json", lambda d: d.update(head=d1))
    return ids, paths


@pytest.mark.parametrize(
    "code",
    [
        "hub.log(NAME + ':dev')",
        "hub.load(NAME + ':dev')[:]",
        "hub.tag(NAME + ':dev', 'd3')",
        "hub.branch(NAME + ':dev', 'feature')",
        "hub.delete_branch(NAME, 'dev')",
        "hub.gc(NAME, grace=0, dry_run=True)",
        "hub.verify(NAME + ':dev')",
    ],
)
def test_a_cycle_of_seals_is_a_format_error_for_every_operation(local_root: str, code: str) -> None:
    _, paths = _seal_cycle(local_root)
    kind, message = _outcome(local_root, code)
    assert kind == "FormatError", (kind, message)
    assert "cycle" in message, message
    assert all(p.name in message for p in paths), message


def test_a_seal_naming_its_own_version_as_successor_is_refused(local_root: str) -> None:
    _, ids = _history(local_root)
    d1 = ids["d1"]
    path = _edit(local_root, f"seals/{d1}.json", lambda d: d.update(successor=d1))
    _edit(local_root, "refs/branches/dev.json", lambda d: d.update(head=d1))
    for code in ("hub.load(NAME + ':dev')[:]", "hub.delete_branch(NAME, 'dev')"):
        kind, message = _outcome(local_root, code)
        assert kind == "FormatError", (code, kind, message)
        assert path.name in message, message


def test_a_chain_longer_than_a_checkpoint_allows_is_refused(local_root: str, layout: int) -> None:
    hub, ids = _history(local_root)
    _rootless(local_root, ids["v2"])
    # A chain of the parent repeated: each entry loads a manifest, so this much work is done
    # for nothing (or, repeated a million times, for ever).
    chain = [ids["v1"]] * (records.CHECKPOINT_EVERY + 1)
    path = _edit(local_root, f"versions/{ids['v2']}.json", lambda d: d.update(chain=chain))
    with pytest.raises(FormatError, match="chain") as info:
        hub.load(f"{NAME}:v2")
    assert path.name in str(info.value)


# -- deeply nested JSON in any record --------------------------------------------------------

#: (the record, relative to the incarnation folder or, for repo.json, the repository; an
#: operation that reads it)
RECORDS: dict[str, tuple[str, Callable[[hubzarr.Hub, dict[str, str]], Any]]] = {
    "repo.json": ("../repo.json", lambda hub, ids: hub.load(NAME)),
    "branch": ("refs/branches/main.json", lambda hub, ids: hub.load(NAME)),
    "tag": ("refs/tags/v1.json", lambda hub, ids: hub.load(f"{NAME}:v1")),
    "claim": ("refs/names/v3.json", lambda hub, ids: hub.tag(NAME, "v3")),
    "version": ("versions/{v1}.json", lambda hub, ids: hub.log(NAME)),
    "seal": ("seals/{v1}.json", lambda hub, ids: hub.log(NAME)),
    "manifest": ("manifests/{v1}.json", lambda hub, ids: hub.gc(NAME, dry_run=True)),
    "index root": ("index/{v1}.json", lambda hub, ids: hub.load(f"{NAME}:v1")),
}


@pytest.mark.parametrize(("relative", "operation"), RECORDS.values(), ids=RECORDS.keys())
def test_deeply_nested_json_in_any_record_is_a_format_error(
    local_root: str, relative: str, operation: Callable[[hubzarr.Hub, dict[str, str]], Any]
) -> None:
    _, ids = _history(local_root)
    [folder] = Path(local_root, NAME).glob("*/refs/..")
    path = (folder / relative.format(**ids)).resolve()
    path.write_bytes(DEEP)  # the claim of an unused name: as if its creator was killed
    with pytest.raises(FormatError) as info:
        operation(hubzarr.Hub(local_root), ids)
    assert type(info.value) is FormatError
    assert path.name in str(info.value)


# -- every field of every record is checked ------------------------------------------------


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


def _put(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.update(changes)


SEAL_DAMAGE: dict[str, Callable[[dict[str, Any]], None]] = {
    "time missing": _drop("time"),
    "time a string": _put(time="yesterday"),
    "time huge": _put(time=1e300),
    "time negative": _put(time=-5),
    "time a bool": _put(time=True),
    "time NaN": _put(time=float("nan")),
    "version missing": _drop("version"),
    "version another": _put(version="0" * 20),
    "successor a number": _put(successor=5),
    "successor not an id": _put(successor="../../x"),
    "successor missing": _drop("successor"),
    "branch not a name": _put(branch="no such/branch"),
    "branch a list": _put(branch=["main"]),
    "message a number": _put(message=5),
    "author a number": _put(author=5),
}


@pytest.mark.parametrize("change", SEAL_DAMAGE.values(), ids=SEAL_DAMAGE.keys())
def test_a_damaged_seal_record_is_a_format_error_naming_it(
    local_root: str, change: Callable[[dict[str, Any]], None]
) -> None:
    hub, ids = _history(local_root)
    path = _edit(local_root, f"seals/{ids['v2']}.json", change)
    with pytest.raises(FormatError) as info:
        hub.log(NAME)
    assert path.name in str(info.value) and "seals" in str(info.value)


VERSION_DAMAGE: dict[str, Callable[[dict[str, Any]], None]] = {
    "created missing": _drop("created"),
    "created a string": _put(created="now"),
    "created huge": _put(created=1e300),
    "created a bool": _put(created=False),
    "parent a number": _put(parent=7),
    "parent not an id": _put(parent="zz"),
    "chain not a list": _put(chain="x"),
    "chain of numbers": _put(chain=[1, 2]),
    "chain missing": _drop("chain"),
    "another version's record": _put(id="0" * 20),
}


@pytest.mark.parametrize("change", VERSION_DAMAGE.values(), ids=VERSION_DAMAGE.keys())
def test_a_damaged_version_record_is_a_format_error_naming_it(
    local_root: str, change: Callable[[dict[str, Any]], None], layout: int
) -> None:
    hub, ids = _history(local_root)
    _rootless(local_root, ids["v2"])
    path = _edit(local_root, f"versions/{ids['v2']}.json", change)
    for operation in (lambda: hub.load(f"{NAME}:v2"), lambda: hub.log(NAME)):
        with pytest.raises(FormatError) as info:
            operation()
        assert path.name in str(info.value) and "versions" in str(info.value)


REF_DAMAGE: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "branch head a number": ("refs/branches/main.json", _put(head=5), NAME),
    "branch head missing": ("refs/branches/main.json", _drop("head"), NAME),
    "branch of another kind": ("refs/branches/dev.json", _put(kind="tag"), f"{NAME}:dev"),
    "branch deleted 'yes'": ("refs/branches/dev.json", _put(deleted="yes"), f"{NAME}:dev"),
    "tag version not an id": ("refs/tags/v1.json", _put(version="zz"), f"{NAME}:v1"),
    "tag time a string": ("refs/tags/v1.json", _put(time="noon"), f"{NAME}:v1"),
    "tag time huge": ("refs/tags/v1.json", _put(time=1e300), f"{NAME}:v1"),
    "tag message a number": ("refs/tags/v1.json", _put(message=5), f"{NAME}:v1"),
    "tag nonce a number": ("refs/tags/v1.json", _put(nonce=5), f"{NAME}:v1"),
}


@pytest.mark.parametrize(("relative", "change", "name"), REF_DAMAGE.values(), ids=REF_DAMAGE.keys())
def test_a_damaged_ref_is_a_format_error_naming_it(
    local_root: str, relative: str, change: Callable[[dict[str, Any]], None], name: str
) -> None:
    hub, _ = _history(local_root)
    _edit(local_root, relative, change)
    for operation in (lambda: hub.load(name), lambda: hub.log(NAME)):
        with pytest.raises(FormatError) as info:
            operation()
        assert relative in str(info.value)


@pytest.mark.parametrize(
    "claim",
    [
        {"kind": "other", "version": "0" * 20},
        {"kind": "tag", "version": "zz", "time": 1.0},
        {"kind": "branch", "head": 5},
        {"kind": "tag", "version": "0" * 20, "time": 1.0, "deleted": True},
    ],
    ids=["kind", "version", "head", "deleted"],
)
def test_a_damaged_claim_is_a_format_error_naming_it(
    local_root: str, claim: dict[str, Any]
) -> None:
    hub, _ = _history(local_root)
    [names] = Path(local_root, NAME).glob("*/refs/names")
    (names / "v3.json").write_bytes(record(names / "v3.json", claim))
    with pytest.raises(FormatError, match=r"refs/names/v3\.json"):
        hub.tag(NAME, "v3")


@pytest.mark.parametrize(
    "owner", ["zz~x", "0" * 20 + "~0", "0" * 20 + "~-1", "0" * 19, "../x"], ids=repr
)
def test_a_malformed_checkpoint_location_is_a_format_error(
    local_root: str, monkeypatch: pytest.MonkeyPatch, owner: str
) -> None:
    monkeypatch.setattr(hubzarr.versions, "LAYOUT", 2)  # layout 3 has no checkpoints
    monkeypatch.setattr(records, "CHECKPOINT_EVERY", 2)
    hub = hubzarr.Hub(local_root)
    arr = hub.array((8, 4), name=NAME, dtype="float32", chunks=(2, 4))
    for i in range(3):
        arr[:] = i
        hub.tag(NAME, f"v{i}")
    [checkpoint] = [
        p
        for p in Path(local_root, NAME).glob("*/manifests/*.json")
        if json.loads(p.read_text())["checkpoint"]
    ]
    data = json.loads(checkpoint.read_text())
    first = next(iter(data["index"]))
    data["index"][owner] = data["index"].pop(first)
    checkpoint.write_bytes(record(checkpoint, data))
    for operation in (lambda: hub.load(f"{NAME}:v2")[:], lambda: hub.load(NAME)[:]):
        with pytest.raises(FormatError) as info:
            operation()
        assert checkpoint.name in str(info.value)


@pytest.mark.parametrize(
    "key", ["../../../../x", "a//b", "./0.0", "0.0~3", "a\\b", "a\x00b", ""], ids=repr
)
def test_a_manifest_naming_a_key_no_store_could_write_is_a_format_error(
    local_root: str, key: str, layout: int
) -> None:
    hub, ids = _history(local_root)
    _rootless(local_root, ids["v1"])
    path = _edit(local_root, f"manifests/{ids['v1']}.json", lambda d: d["written"].append(key))
    with pytest.raises(FormatError) as info:
        hub.load(f"{NAME}:v1")
    assert path.name in str(info.value)


def test_a_manifest_with_a_bad_generation_is_a_format_error(local_root: str, layout: int) -> None:
    hub, ids = _history(local_root)
    _rootless(local_root, ids["v1"])
    path = _edit(local_root, f"manifests/{ids['v1']}.json", _put(generations={"0.0": True}))
    with pytest.raises(FormatError, match=path.name):
        hub.load(f"{NAME}:v1")


def test_repo_json_with_a_bad_layout_or_time_is_a_format_error(local_root: str) -> None:
    _history(local_root)
    repo_json = Path(local_root, NAME, "repo.json")
    info = json.loads(repo_json.read_text())
    for damage in ({"layout": True}, {"layout": 0}, {"created": 1e300}, {"default_branch": "a b"}):
        repo_json.write_bytes(record(repo_json, {**info, **damage}))
        with pytest.raises(FormatError) as raised:
            hubzarr.Hub(local_root).load(NAME)
        assert type(raised.value) is FormatError, damage
        assert "repo.json" in str(raised.value), damage


def test_old_records_without_optional_fields_still_open(local_root: str) -> None:
    """Records as every layout wrote them: a branch ref of just its head, manifests without
    generations, seals and tags with a null message."""
    hub, ids = _history(local_root)
    _edit(local_root, "refs/branches/main.json", lambda d: d.clear() or d.update(head=ids["head"]))
    _edit(local_root, f"manifests/{ids['v1']}.json", _drop("generations"))
    np.testing.assert_array_equal(hub.load(f"{NAME}:v1")[:], np.ones((8, 4)))
    entries = hub.log(NAME)
    assert [e.message for e in entries if e.id == ids["v1"]] == ["one"]
    assert [e.message for e in entries if e.id == ids["v2"]] == [None]


# -- chunks with a valid envelope whose content does not decode ------------------------------

COMPRESSORS: dict[str, Any] = {
    "blosc": numcodecs.Blosc(cname="lz4"),
    "zstd": numcodecs.Zstd(),
    "gzip": numcodecs.GZip(),
    "none": None,
}


def _undecodable(compressor: Any, kind: str) -> bytes:
    """A payload that is not what the array's codecs produce, for a chunk of 2 x 4 float32."""
    if kind == "junk":
        return b"not a chunk at all, but stored with a valid checksum"
    good = np.ones((2, 4), dtype="float32").tobytes()
    encoded = bytes(compressor.encode(good)) if compressor is not None else good
    if isinstance(compressor, numcodecs.Blosc):
        # Blosc stored these few bytes as they are; its header now says they are compressed.
        encoded = encoded[:2] + b"\x01" + encoded[3:]
    # The codec's own header (sizes, flags) kept, everything after it scrambled.
    return encoded[:16] + bytes(b ^ 0xA5 for b in encoded[16:]) + b"\x00\x01"


READS: dict[str, Callable[[hubzarr.HubArray], Any]] = {
    "index": lambda a: a[:],
    "index one chunk": lambda a: a[2:4],
    "index a step": lambda a: a[::-2, 1],
    "lazy compute": lambda a: a.lazy[1:5].compute(),
    "mean": lambda a: a.mean(),
    "std": lambda a: a.std(),
    "max": lambda a: a.max(),
    "histogram": lambda a: a.histogram(bins=4, range=(0, 5)),
    "dask compute": lambda a: a.dask.compute(),
    "lazy dask": lambda a: a.lazy[1:7, 1:3].dask.compute(),
    "partial write": lambda a: a.__setitem__((2, 1), 7.0),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
@pytest.mark.parametrize("kind", ["junk", "scrambled"])
@pytest.mark.parametrize("compressor", COMPRESSORS.values(), ids=COMPRESSORS.keys())
def test_a_chunk_that_does_not_decode_is_a_corrupt_chunk_error_naming_it(
    memory_root: str, compressor: Any, kind: str, read: Callable[[hubzarr.HubArray], Any]
) -> None:
    hub = hubzarr.Hub(memory_root)
    arr = hub.array((8, 4), name=NAME, dtype="float32", chunks=(2, 4), compressor=compressor)
    arr[:] = 1
    _set(hub, "1.0", _undecodable(compressor, kind))
    loaded = hub.load(NAME)
    assert isinstance(loaded, hubzarr.HubArray)
    with pytest.raises(CorruptChunkError, match=r"'1\.0'"):
        read(loaded)


# -- metadata that names codecs it should not, or cannot be built -------------------------


def _zarray_edit(hub: hubzarr.Hub, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(_get(hub, ".zarray"))
    change(doc)
    _set(hub, ".zarray", json.dumps(doc).encode())


CODEC_DAMAGE: dict[str, Callable[[dict[str, Any]], None]] = {
    "compressor with an unknown argument": lambda d: d["compressor"].update(bogus=1),
    "compressor with a missing argument": lambda d: d.update(compressor={"id": "delta"}),
    "filter with an unknown argument": lambda d: d.update(
        filters=[{"id": "delta", "dtype": "<f4", "bogus": 1}]
    ),
    "astype to objects": lambda d: d.update(
        filters=[{"id": "astype", "encode_dtype": "|O", "decode_dtype": "<f4"}]
    ),
    "astype from objects": lambda d: d.update(
        filters=[{"id": "astype", "encode_dtype": "<f4", "decode_dtype": "O"}]
    ),
    "delta to objects": lambda d: d.update(
        filters=[{"id": "delta", "dtype": "<f4", "astype": "|O"}]
    ),
    "fixedscaleoffset to objects": lambda d: d.update(
        filters=[
            {"id": "fixedscaleoffset", "offset": 0, "scale": 1, "dtype": "<f4", "astype": "object"}
        ]
    ),
}


@pytest.mark.parametrize("change", CODEC_DAMAGE.values(), ids=CODEC_DAMAGE.keys())
def test_codecs_stored_metadata_cannot_build_or_run_safely_are_format_errors(
    hub: hubzarr.Hub, change: Callable[[dict[str, Any]], None]
) -> None:
    arr = hub.array((8, 4), name=NAME, dtype="float32", chunks=(2, 4))
    arr[:] = 1
    _zarray_edit(hub, change)
    with pytest.raises(FormatError, match=r"\.zarray") as info:
        hub.load(NAME)
    assert type(info.value) is FormatError
    report = hub.verify(NAME)  # reports it, rather than raising what the codec raised
    assert [p.key for p in report.problems] == [".zarray"]
    assert ".zarray" in report.problems[0].message


def test_a_filter_that_cannot_decode_a_chunk_is_reported_by_verify(hub: hubzarr.Hub) -> None:
    arr = hub.array((8, 4), name=NAME, dtype="float32", chunks=(2, 4))
    arr[:] = 1
    # Chunks written as float32; the metadata now says they were float64 before a cast.
    _zarray_edit(
        hub,
        lambda d: d.update(
            filters=[{"id": "astype", "encode_dtype": "<f8", "decode_dtype": "<f4"}]
        ),
    )
    report = hub.verify(NAME)
    assert sorted(p.key for p in report.problems) == ["0.0", "1.0", "2.0", "3.0"]
    loaded = hub.load(NAME)
    assert isinstance(loaded, hubzarr.HubArray)
    with pytest.raises(CorruptChunkError):
        loaded[:]


# -- attributes ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [NAME, "dmg/group"])
def test_deeply_nested_stored_attributes_are_a_format_error(hub: hubzarr.Hub, name: str) -> None:
    if name == NAME:
        hub.array((8, 4), name=name, dtype="float32", chunks=(2, 4))
    else:
        hub.group(name).create_array("a", shape=(4,), dtype="float32")
    _set(hub, ".zattrs", b'{"x": ' + DEEP + b"}", name=name)
    with pytest.raises(FormatError, match=r"\.zattrs"):
        hub.load(name)
    assert [p.key for p in hub.verify(name).problems] == [".zattrs"]


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_attributes_nested_too_deep_to_read_back_are_refused() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for bad in ({"x": _nested(100_000)}, {"x": _nested(MAX_ATTRIBUTE_DEPTH)}, {"x": cyclic}):
        with pytest.raises(InvalidArgumentError, match="deep"):
            encode_attributes(bad)
    with pytest.raises(InvalidArgumentError, match="JSON"):
        encode_attributes({"x": object()})
    fine = {"x": _nested(MAX_ATTRIBUTE_DEPTH - 1), "y": "z"}
    assert json.loads(encode_attributes(fine)) == fine


# -- a failed call leaves storage as it was ------------------------------------------------


def test_damage_found_while_reading_changes_nothing(local_root: str) -> None:
    hub, ids = _history(local_root)
    _edit(local_root, f"seals/{ids['v2']}.json", _put(time="yesterday"))
    before = _files(local_root)
    with pytest.raises(FormatError):
        hub.log(NAME)
    assert _files(local_root) == before
