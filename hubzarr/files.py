"""The files of one repository: where each lies, and reading and writing its records.

Every path inside a repository is built here, only from parsed parts (a :class:`Name`, version
ids, ref names, zarr keys the store checked), so no name or key reaches past the repository's
folder. Records are read and written through :func:`hubzarr.records.decode_record` and
:func:`hubzarr.records.encode_record`: with their checksum, bound to their path below
``<user>/<name>/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hubzarr.errors import AlreadyExistsError, NotFoundError
from hubzarr.names import Name
from hubzarr.records import Location, RefKind, RepositoryRecord, decode_record, encode_record
from hubzarr.storage import Storage

__all__ = ["RepoFiles"]

T = TypeVar("T")


class RepoFiles:
    """The files of the repository ``name`` under ``storage``'s root.

    Parameters
    ----------
    storage : Storage
        The hub root.
    name : Name
        The repository (its ref is ignored).
    """

    def __init__(self, storage: Storage, name: Name) -> None:
        self.storage = storage
        self.name = name.with_ref(None)
        #: The repository's folder under the root, ``<user>/<name>``.
        self.base = f"{name.user}/{name.repo}"
        self._info: RepositoryRecord | None = None
        #: ``repo.json`` as last read, to tell cheaply that it did not change.
        self._raw_info: bytes | None = None

    # -- identity ------------------------------------------------------------------------

    @property
    def repo_json(self) -> str:
        """The path of ``repo.json``."""
        return f"{self.base}/repo.json"

    @property
    def info(self) -> RepositoryRecord:
        """``repo.json`` as read when the repository was opened (or written when created)."""
        if self._info is None:
            raise AssertionError("open or create the repository first")
        return self._info

    @info.setter
    def info(self, info: RepositoryRecord | None) -> None:
        self._info = info

    @property
    def is_open(self) -> bool:
        """Whether ``repo.json`` has been read (or written)."""
        return self._info is not None

    async def still_open(self) -> bool:
        """Whether ``repo.json`` still holds exactly what was read when the repository was
        opened: the same incarnation. One read, and a comparison of bytes."""
        raw = await self.storage.read(self.repo_json)
        if raw is not None and raw == self._raw_info:
            return True
        if raw is None or self._parse_info(raw).id != self.info.id:
            return False
        self._raw_info = raw
        return True

    async def read_info(self) -> RepositoryRecord | None:
        """Read and check ``repo.json``; ``None`` if the repository does not exist.

        Raises
        ------
        FormatError
            If it is malformed, or of a newer layout than this hubzarr reads.
        """
        raw = await self.storage.read(self.repo_json)
        if raw is None:
            return None
        info = self._parse_info(raw)
        self._raw_info = raw
        return info

    def _parse_info(self, raw: bytes) -> RepositoryRecord:
        path = self.repo_json
        data = decode_record(raw, self.where(path), self._place(path), None)
        return RepositoryRecord.parse(data, self.where(path), str(self.name))

    # -- paths ---------------------------------------------------------------------------

    @property
    def home(self) -> str:
        """The incarnation folder, ``<user>/<name>/<incarnation>``."""
        return f"{self.base}/{self.info.id}"

    def path(self, *parts: str) -> str:
        """The storage path of ``parts`` inside the incarnation folder."""
        return "/".join((self.home, *parts))

    def data_path(self, version: str, key: str, generation: int = 0) -> str:
        """The storage path of generation ``generation`` of ``key`` written in ``version``."""
        suffix = f"~{generation}" if generation else ""
        return f"{self.home}/data/{version}/{key}{suffix}"

    def object_path(self, location: Location, key: str) -> str:
        """The storage path of the object of ``key`` at ``location``."""
        return self.data_path(location.version, key, location.generation)

    def version_path(self, version: str) -> str:
        """``versions/<version>.json``."""
        return self.path("versions", f"{version}.json")

    def seal_path(self, version: str) -> str:
        """``seals/<version>.json``."""
        return self.path("seals", f"{version}.json")

    def manifest_path(self, version: str) -> str:
        """``manifests/<version>.json``."""
        return self.path("manifests", f"{version}.json")

    def index_path(self, version: str) -> str:
        """``index/<version>.json``: a sealed version's index root (layout 3 and newer)."""
        return self.path("index", f"{version}.json")

    def expiry_path(self, version: str) -> str:
        """The path of a version's expiry mark (retention)."""
        return self.path("expired", f"{version}.json")

    def shard_path(self, name: str) -> str:
        """``shards/<name>.json``: an index shard, named ``<writer version>-<number>`` (layout
        4) or by its content's hash (layout 3)."""
        return self.path("shards", f"{name}.json")

    def ref_path(self, kind: RefKind, ref: str) -> str:
        """``refs/branches/<ref>.json`` or ``refs/tags/<ref>.json``."""
        return self.path("refs", "branches" if kind == "branch" else "tags", f"{ref}.json")

    def claim_path(self, ref: str) -> str:
        """``refs/names/<ref>.json``: the claim of a ref name."""
        return self.path("refs", "names", f"{ref}.json")

    def where(self, path: str) -> str:
        """How an error names the file at ``path``."""
        return f"{self.storage.url}/{path}"

    def _place(self, path: str) -> str:
        """A path below ``<user>/<name>/``: what a record's checksum binds it to (so that a
        repository copied to another name or root stays valid)."""
        assert path.startswith(self.base + "/"), path
        return path[len(self.base) + 1 :]

    # -- records -------------------------------------------------------------------------

    async def read_record(self, path: str, parse: Callable[[dict[str, Any], str], T]) -> T | None:
        """Read the record at ``path``, check its checksum and ``parse(data, where)`` it;
        ``None`` if there is none.

        Raises
        ------
        FormatError
            If the record is malformed, fails its checksum, or ``parse`` refuses it.
        """
        raw = await self.storage.read(path)
        if raw is None:
            return None
        where = self.where(path)
        layout = self._info.layout if self._info is not None else None
        return parse(decode_record(raw, where, self._place(path), layout), where)

    def encode(self, path: str, record: dict[str, Any]) -> bytes:
        """The bytes of ``record`` stored at ``path``: canonical JSON with its checksum."""
        return encode_record(record, self._place(path))

    async def create_record(self, path: str, record: dict[str, Any]) -> None:
        """Create a record once (put-if-absent), with its checksum.

        Raises
        ------
        AlreadyExistsError
            If the file exists (it is left unchanged).
        """
        await self.storage.create(path, self.encode(path, record))

    async def write_record(
        self, path: str, record: dict[str, Any], *, durable: bool = False
    ) -> None:
        """Replace a record (a branch ref, a deleted ref's marker), with its checksum."""
        await self.storage.write(path, self.encode(path, record), durable=durable)

    async def create_or_match(self, path: str, record: dict[str, Any]) -> None:
        """Create a record that every writer writes identically (a finisher's copy): finding
        it there with the same content is success.

        Raises
        ------
        AlreadyExistsError
            If the file exists with other content.
        """
        content = self.encode(path, record)
        try:
            await self.storage.create(path, content)
        except AlreadyExistsError:
            if await self.storage.read(path) != content:
                raise

    def gone(self) -> NotFoundError:
        """The error of a handle whose repository was deleted after it opened it."""
        return NotFoundError(
            f"the repository {self.name} under {self.storage.url} was deleted after this "
            "handle opened it; open it again (hubzarr.load) if it was created anew"
        )
