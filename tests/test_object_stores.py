"""The same contracts on real object stores: S3 through a moto server, GCS through the emulator."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from _procs import race
from conftest import Backend
from servers import Server, gcs_object_name, make_public_read
from test_storage import StorageContract
from test_store import NAME
from test_store import TestHubStore as _HubStoreTests

import hubzarr
from hubzarr.config import Settings, save_settings
from hubzarr.storage import FsspecStorage, Storage, open_storage

# -- the storage primitives ------------------------------------------------------------


class _ObjectStorageContract(StorageContract):
    kind: str

    @pytest.fixture
    def object_backend(self, request: pytest.FixtureRequest) -> Backend:
        backend: Backend = request.getfixturevalue(f"{self.kind}_backend")
        return backend

    @pytest.fixture
    def root_url(self, object_backend: Backend) -> str:
        return object_backend.root

    @pytest.fixture
    def storage(self, object_backend: Backend) -> Storage:
        self.options = object_backend.options
        return self.open(object_backend.root)

    def open(self, url: str) -> Storage:
        return open_storage(url, self.options)

    def put_raw(self, storage: Storage, path: str, data: bytes) -> None:
        assert isinstance(storage, FsspecStorage)
        storage.fs.pipe_file(f"{storage.fs._strip_protocol(storage.url)}/{path}", data)

    def raw_names(self, storage: Storage) -> list[str]:
        assert isinstance(storage, FsspecStorage)
        base = storage.fs._strip_protocol(storage.url)
        return sorted(p[len(base) + 1 :] for p in storage.fs.find(base))

    async def test_objects_under_a_file_are_refused(self, storage: Storage) -> None:
        # Object stores have flat key spaces: "f" and "f/g" are independent objects.
        await storage.write("f", b"file")
        await storage.create("f/g", b"x")
        assert await storage.read("f") == b"file"
        assert await storage.read("f/g") == b"x"


class TestS3Storage(_ObjectStorageContract):
    kind = "s3"


class TestGCSStorage(_ObjectStorageContract):
    """The emulator ignores preconditions, so put-if-absent is checked by what is sent."""

    kind = "gcs"

    async def test_create_succeeds_once(self, storage: Storage, object_backend: Backend) -> None:
        assert object_backend.server is not None
        object_backend.server.reset()
        await storage.create("once", b"first")
        sent = [r for r in object_backend.server.requests if gcs_object_name(r) == "hub/once"]
        assert [r.query.get("ifGenerationMatch") for r in sent] == ["0"]
        assert await storage.read("once") == b"first"

    # Refusing an existing object is the server's job, and the emulator does not do it; the
    # request carrying ifGenerationMatch=0 is asserted above instead. (S3 and local run both.)
    test_create_refuses_an_object_made_by_write = None
    test_concurrent_creates_have_one_winner = None
    test_create_copy_refuses_an_existing_object = None


# -- zarr's Store conformance suite ------------------------------------------------------


class TestHubStoreOnS3(_HubStoreTests):
    @pytest.fixture
    def store_kwargs(self, s3_backend: Backend) -> dict[str, Any]:
        s3_backend.hub().store(NAME, mode="w-")
        return {"root": s3_backend.root, "name": NAME, "storage_options": s3_backend.options}


class TestHubStoreOnGCS(_HubStoreTests):
    @pytest.fixture
    def store_kwargs(self, gcs_backend: Backend) -> dict[str, Any]:
        gcs_backend.hub().store(NAME, mode="w-")
        return {"root": gcs_backend.root, "name": NAME, "storage_options": gcs_backend.options}


# -- the story on every backend -------------------------------------------------------------


def test_the_story_works_on_every_backend(backend: Backend) -> None:
    hub = backend.hub()
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    big = hub.array((20, 32, 32, 3), name="test/bigarray:v0", dtype="uint8")
    big[0, :, :, :] = image
    again = backend.hub().load("test/bigarray:v0")
    assert again[0:10, 4:8, 4:8].mean() == pytest.approx(image[4:8, 4:8].mean() / 10)
    version = hub.tag("test/bigarray:v0", "v1")
    big[0] = 255 - image
    np.testing.assert_array_equal(hub.load("test/bigarray:v1")[0], image)
    np.testing.assert_array_equal(hub.load("test/bigarray:v0")[0], 255 - image)
    assert hub.load(f"test/bigarray:{version}").read_only
    assert hub.ls() == ["test/bigarray"]
    assert [e.refs for e in hub.log("test/bigarray")] == [("v0",), ("tag: v1",)]
    hub.delete("test/bigarray")
    assert hub.ls() == []


def _data_requests(server: Server, kind: str) -> list[tuple[str, str]]:
    out = []
    for r in server.requests:
        name = r.path if kind == "s3" else (gcs_object_name(r) or r.path)
        if "/data/" in name:
            out.append((r.method, name))
    return out


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_a_sealed_version_costs_one_request_per_chunk(
    request: pytest.FixtureRequest, kind: str
) -> None:
    backend: Backend = request.getfixturevalue(f"{kind}_backend")
    hub = backend.hub()
    arr = hub.array((8, 16), name="test/reads", dtype="int32", chunks=(2, 16))
    arr[:] = np.arange(128).reshape(8, 16) + 1
    for i in range(3):
        arr[2 * i] = -i
        hub.tag("test/reads", f"v{i}")
    tagged = backend.hub().load("test/reads:v2")
    assert backend.server is not None
    backend.server.reset()
    data = tagged[:]
    assert data[4].tolist() == [-2] * 16
    requests = list(backend.server.requests)
    assert len(requests) == 4, [(r.method, r.path) for r in requests]
    assert sorted(m for m, _ in _data_requests(backend.server, kind)) == ["GET"] * 4
    assert len({p for _, p in _data_requests(backend.server, kind)}) == 4


def test_s3_put_if_absent_sends_if_none_match(s3_backend: Backend) -> None:
    assert s3_backend.server is not None
    s3_backend.server.reset()
    s3_backend.hub().store("test/pre", mode="w-")
    creates = [r for r in s3_backend.server.requests if r.path.endswith("/repo.json")]
    assert [r.headers.get("if-none-match") for r in creates if r.method == "PUT"] == ["*"]
    with pytest.raises(hubzarr.AlreadyExistsError):
        s3_backend.hub().store("test/pre", mode="w-")


def test_gcs_put_if_absent_sends_the_generation_precondition(gcs_backend: Backend) -> None:
    # The emulator does not enforce preconditions: assert that they are sent.
    assert gcs_backend.server is not None
    gcs_backend.server.reset()
    gcs_backend.hub().store("test/pre", mode="w-")
    uploads = [
        r
        for r in gcs_backend.server.requests
        if (gcs_object_name(r) or "").endswith("/repo.json") and r.method == "POST"
    ]
    assert uploads
    assert all(r.query.get("ifGenerationMatch") == "0" for r in uploads)


def test_a_missing_gcs_bucket_is_not_found(gcs_backend: Backend) -> None:
    # The emulator answers a missing bucket like a missing object, so no bucket hint here.
    hub = hubzarr.Hub("gs://no-such-bucket-here/hub", storage_options=gcs_backend.options)
    with pytest.raises(hubzarr.NotFoundError):
        hub.load("test/x")


@pytest.mark.parametrize("kind", ["s3"])
def test_a_missing_bucket_is_not_found_with_a_hint(
    request: pytest.FixtureRequest, kind: str
) -> None:
    backend: Backend = request.getfixturevalue(f"{kind}_backend")
    scheme = backend.root.split("://")[0]
    hub = hubzarr.Hub(f"{scheme}://no-such-bucket-here/hub", storage_options=backend.options)
    with pytest.raises(hubzarr.NotFoundError, match=r"bucket 'no-such-bucket-here'.*create it"):
        hub.load("test/x")


def test_no_secret_in_pickles_reprs_or_errors(s3_backend: Backend) -> None:
    options = {**s3_backend.options, "secret": "SECRETLEAK", "key": "AKIDSECRETLEAK"}
    hub = hubzarr.Hub(s3_backend.root, storage_options=options)
    arr = hub.array((4,), name="test/secret", dtype="int8")
    arr[:] = 3
    for obj in (arr, arr.store, hub, hub.storage):
        blob = pickle.dumps(obj)
        assert b"LEAK" not in blob, type(obj)
    for obj in (arr.store, hub, hub.storage):  # whose repr needs no credentials
        assert repr(pickle.loads(pickle.dumps(obj))) == repr(obj)
    with pytest.raises(hubzarr.AccessDeniedError, match="no credentials"):
        pickle.loads(pickle.dumps(arr))[:]  # the receiver must bring its own
    assert "LEAK" not in repr(arr)
    assert "LEAK" not in repr(arr.store)
    assert "LEAK" not in repr(hub)
    assert "LEAK" not in repr(hub.storage)
    with pytest.raises(hubzarr.HubError) as info:
        hub.load("test/missing")
    assert "LEAK" not in str(info.value)


def _s3_race(root: str, options: dict[str, Any], barrier: Any, results: Any, i: int) -> None:
    barrier.wait()
    try:
        hubzarr.Hub(root, storage_options=options).tag("race/arr", "v1", message=str(i))
        results.put((i, "won"))
    except hubzarr.AlreadyExistsError:
        results.put((i, "exists"))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((i, f"{type(exc).__name__}: {exc}"))


def test_exactly_one_concurrent_tagger_wins_on_s3(s3_backend: Backend) -> None:
    hub = s3_backend.hub()
    arr = hub.array((8,), name="race/arr", dtype="int32", chunks=(2,))
    arr[:] = np.arange(8)
    n = 4
    outcomes = race(_s3_race, (s3_backend.root, s3_backend.options), n)
    assert sorted(outcomes.values()) == ["exists"] * (n - 1) + ["won"], outcomes
    np.testing.assert_array_equal(hub.load("race/arr:v1")[:], np.arange(8))


def _make_public(backend: Backend) -> None:
    assert backend.server is not None
    make_public_read(backend.server.url, backend.root.split("/")[2])


def test_load_by_bare_name_from_a_configured_public_root(s3_backend: Backend) -> None:
    # The seed's hub.load("imagenet"), over a public bucket set up with 'hub configure --anon'.
    writer = s3_backend.hub()
    arr = writer.array((4, 3), name="library/imagenet", dtype="uint8", chunks=(2, 3))
    arr[:] = np.arange(12).reshape(4, 3)
    _make_public(s3_backend)
    assert s3_backend.server is not None
    save_settings(Settings(root=s3_backend.root, endpoint_url=s3_backend.server.url, anon=True))
    s3_backend.server.reset()
    imagenet = hubzarr.load("imagenet")
    assert imagenet.shape == (4, 3)
    assert imagenet[0:2, 1:3].tolist() == [[1, 2], [4, 5]]
    assert all("authorization" not in r.headers for r in s3_backend.server.requests)


def test_a_public_bucket_reads_anonymously(s3_backend: Backend) -> None:
    writer = s3_backend.hub()
    arr = writer.array((6,), name="pub/data", dtype="int32", chunks=(2,))
    arr[:] = np.arange(6)
    writer.tag("pub/data", "v1")
    _make_public(s3_backend)
    assert s3_backend.server is not None
    anonymous = {
        "anon": True,
        "client_kwargs": s3_backend.options["client_kwargs"],
    }
    s3_backend.server.reset()
    reader = hubzarr.Hub(s3_backend.root, storage_options=anonymous)
    np.testing.assert_array_equal(reader.load("pub/data:v1")[:], np.arange(6))
    signed = [r for r in s3_backend.server.requests if "authorization" in r.headers]
    assert s3_backend.server.requests
    assert signed == []


def test_a_read_at_a_branch_head_checks_the_seal_once(s3_backend: Backend) -> None:
    hub = s3_backend.hub()
    arr = hub.array((8, 16), name="test/head", dtype="int32", chunks=(2, 16))
    arr[:] = 1
    assert s3_backend.server is not None
    s3_backend.server.reset()
    assert arr[:].sum() == 128
    methods = sorted(r.method for r in s3_backend.server.requests)
    seal_checks = [r for r in s3_backend.server.requests if "/seals/" in r.path]
    liveness = [r for r in s3_backend.server.requests if r.path.endswith("/repo.json")]
    # One seal check and, in the same round trip, one check that the repository was not
    # deleted; then per chunk the newest generation known and the next one, read concurrently
    # (another process may have rewritten the chunk).
    assert methods == ["GET"] * 10, [(r.method, r.path) for r in s3_backend.server.requests]
    assert len(seal_checks) == 1
    assert len(liveness) == 1
    probes = [r for r in s3_backend.server.requests if r.path.endswith("~1")]
    assert len(probes) == 4


def test_a_read_at_a_head_right_after_a_tag_costs_two_gets_per_chunk(
    s3_backend: Backend,
) -> None:
    hub = s3_backend.hub()
    arr = hub.array((8, 16), name="test/after", dtype="int32", chunks=(2, 16))
    arr[:] = 1
    hub.tag("test/after", "v1")
    reader = hub.load("test/after")
    assert s3_backend.server is not None
    s3_backend.server.reset()
    assert reader[:].sum() == 128
    requests = s3_backend.server.requests
    # One seal check, then per inherited chunk: generation 0 in the head (404), the tag's.
    # ... and the check that the repository still exists, beside the seal check.
    assert sorted(r.method for r in requests) == ["GET"] * 10
    assert sum(r.status == 404 for r in requests) == 5  # four chunks' head, the seal check
    assert sum(r.path.endswith("/repo.json") for r in requests) == 1


def test_a_fresh_reader_finds_the_newest_rewrite_of_an_inherited_chunk(
    s3_backend: Backend,
) -> None:
    hub = s3_backend.hub()
    arr = hub.array((4,), name="test/gens", dtype="int32", chunks=(4,))
    arr[:] = 1
    hub.tag("test/gens", "v1")
    for value in range(2, 7):
        arr[0] = value  # generations 0-4 in the new head
    assert s3_backend.hub().load("test/gens")[:].tolist() == [6, 1, 1, 1]
    assert s3_backend.hub().load("test/gens:v1")[:].tolist() == [1, 1, 1, 1]
