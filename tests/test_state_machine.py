"""A hypothesis state machine: writes, tags, branches, commits, reverts, merges, reads as of a
time, deletions, gc with retention and reads of one repository, checked after every step
against a small pure-Python model (one numpy array per ref, and which object each chunk is)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from conftest import Backend
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from zarr.core.sync import sync

import hubzarr
import hubzarr.collect
from hubzarr import records
from hubzarr.names import parse_name
from hubzarr.versions import Repository

REPO = "sm/arr"
DEFAULT = "main"
#: The names of tags and branches, a fixed set. Names are drawn from the taken and deleted
#: ones often (see _pick), so collisions and reuse are common; there are enough that a long
#: run, in which every tag and branch uses up a name for good, still has some to create refs.
NAMES = [DEFAULT, *"abcdefghijklmno"]
MAX_HANDLES = 4

SETTINGS = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    # Each example is a fresh repository: replaying a saved failure on another root or after a
    # code change would be misleading, and the examples are cheap to draw again.
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

names = st.sampled_from(NAMES)


def _pick(data: st.DataObject, label: str, *pools: Iterable[str]) -> str:
    """Draw a name from one of the pools that are not empty, or any name."""
    # In the pools' own order, not sorted: version ids made in one millisecond sort by their
    # random part, which would make the draws differ when Hypothesis replays a case.
    orders = [list(dict.fromkeys(pool)) for pool in pools]
    choices = [st.sampled_from(order) for order in orders if order]
    return data.draw(st.one_of(*choices, names), label=label)


def _axis_index(size: int, chunk: int) -> st.SearchStrategy[int | slice]:
    """An index along one axis: an integer, a chunk-aligned slice, or any slice with a step."""
    starts = st.none() | st.integers(-size - 1, size + 1)
    aligned = st.integers(0, (size - 1) // chunk).map(lambda k: slice(k * chunk, (k + 1) * chunk))
    return st.one_of(
        st.integers(-size, size - 1),
        aligned,
        st.just(slice(None)),
        st.builds(slice, starts, starts, st.sampled_from([None, 1, 2, 3, -1, -2])),
    )


def _chunk_span(size: int, chunk: int) -> st.SearchStrategy[slice]:
    """A slice along one axis covering whole chunks (the last one possibly partial)."""
    count = -(-size // chunk)
    return st.integers(0, count - 1).flatmap(
        lambda first: st.integers(first + 1, count).map(
            lambda end: slice(first * chunk, end * chunk)
        )
    )


@dataclass
class Handle:
    """An array opened earlier at a ref, kept to check that it follows the ref (a branch) or
    keeps reading the version it was opened at (a tag)."""

    ref: str
    version: str | None  # a tag's version; None at a branch
    array: hubzarr.HubArray = field(repr=False)
    deleted: bool = False  # whether its ref was deleted since


class VersionMachine(RuleBasedStateMachine):
    """Operations on ``sm/arr`` against a model of every ref's content."""

    root: str = ""
    options: dict[str, Any] = {}  # noqa: RUF012 - set per test by a subclass, never mutated

    def __init__(self) -> None:
        super().__init__()
        self.hub = hubzarr.Hub(f"{self.root}/{uuid.uuid4().hex}", storage_options=self.options)
        self.branches: dict[str, np.ndarray[Any, Any]] = {}
        self.tags: dict[str, str] = {}  # tag -> version id
        self.sealed: dict[str, np.ndarray[Any, Any]] = {}  # version id -> frozen content
        self.deleted: set[str] = set()  # names of deleted tags and branches
        #: Versions retention dropped, with the content they had (a handle held on one may
        #: still read it, or refuse, never read other data).
        self.dropped: dict[str, np.ndarray[Any, Any] | None] = {}
        self.handles: list[Handle] = []
        self.shape: tuple[int, ...] = ()
        self.chunks: tuple[int, ...] = ()
        #: Which object each chunk of a branch, or of a sealed version, is: a new token for
        #: every write that touches it (a write stores a new object, whatever its bytes),
        #: ``None`` where the chunk is all fill (zarr deletes it). A three-way merge compares
        #: these, as hubzarr compares locations.
        self.tokens: dict[str, dict[tuple[int, ...], int | None]] = {}
        self.sealed_tokens: dict[str, dict[tuple[int, ...], int | None]] = {}
        self._next_token = 0

    # -- the model -----------------------------------------------------------------------

    def _content(self, ref: str) -> np.ndarray[Any, Any] | None:
        """The model's content of a branch, tag or version id; ``None`` if it is not live."""
        if ref in self.branches:
            return self.branches[ref]
        if ref in self.tags:
            return self.sealed[self.tags[ref]]
        return self.sealed.get(ref)

    @property
    def _live(self) -> set[str]:
        return {*self.branches, *self.tags}

    def _taken(self, name: str) -> bool:
        return name in self.branches or name in self.tags or name in self.deleted

    def _check(self, array: hubzarr.HubArray, expected: np.ndarray[Any, Any], what: str) -> None:
        got = array[:]
        assert got.dtype == expected.dtype, what
        np.testing.assert_array_equal(got, expected, err_msg=what)

    def _grid(self) -> list[tuple[int, ...]]:
        counts = (-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True))
        return list(itertools.product(*map(range, counts)))

    def _region(self, c: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(i * n, (i + 1) * n) for i, n in zip(c, self.chunks, strict=True))

    def _chunk(self, content: np.ndarray[Any, Any], c: tuple[int, ...]) -> np.ndarray[Any, Any]:
        return content[self._region(c)]

    def _token(self, content: np.ndarray[Any, Any], c: tuple[int, ...]) -> int | None:
        """A new object for chunk ``c`` of ``content``, or none if it is all fill."""
        if not self._chunk(content, c).any():
            return None
        self._next_token += 1
        return self._next_token

    def _seal(self, version: str, branch: str) -> None:
        """The model learns ``version``, sealed with ``branch``'s content and objects."""
        self.sealed[version] = self.branches[branch].copy()
        self.sealed_tokens[version] = dict(self.tokens[branch])

    def _tokens_of(self, ref: str) -> dict[tuple[int, ...], int | None]:
        if ref in self.branches:
            return self.tokens[ref]
        version = self.tags.get(ref, ref)
        # The array's first version (made by its creation) is not in the model: no chunks.
        return self.sealed_tokens.get(version, dict.fromkeys(self._grid()))

    def _learn_seals(self, branch: str, made: str | None = None) -> None:
        """A commit hubzarr made without a new state (a merge or gc seals the head first):
        the newest sealed version of the branch but ``made``, if new to the model, holds the
        branch's content."""
        entries = [
            e for e in self.hub.log(f"{REPO}:{branch}", limit=3) if e.sealed and e.id != made
        ]
        if entries and entries[0].id not in self.sealed.keys() | self.dropped.keys():
            self._seal(entries[0].id, branch)

    # -- creation ------------------------------------------------------------------------

    @initialize(
        layout=st.one_of(
            st.integers(1, 12).flatmap(
                lambda n: st.tuples(st.just((n,)), st.tuples(st.integers(1, n)))
            ),
            st.tuples(st.integers(1, 4), st.integers(1, 5)).flatmap(
                lambda s: st.tuples(
                    st.just(s), st.tuples(st.integers(1, s[0]), st.integers(1, s[1]))
                )
            ),
        )
    )
    def create(self, layout: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
        self.shape, self.chunks = layout
        arr = self.hub.array(self.shape, name=REPO, dtype="int16", chunks=self.chunks)
        self.branches[DEFAULT] = np.zeros(self.shape, dtype="int16")
        self.tokens[DEFAULT] = dict.fromkeys(self._grid())
        self.handles.append(Handle(DEFAULT, None, arr))

    # -- writes --------------------------------------------------------------------------

    def _draw_write(self, data: st.DataObject) -> tuple[tuple[int | slice, ...], Any]:
        region = tuple(
            data.draw(_axis_index(size, chunk), label="region")
            for size, chunk in zip(self.shape, self.chunks, strict=True)
        )
        target_shape = np.zeros(self.shape)[region].shape
        # Zero, the fill value, among others: a chunk left all zero is deleted by zarr.
        elements = st.sampled_from([0, 1, -7, 300, -32768, 32767])
        value = data.draw(
            st.one_of(
                elements,
                elements.map(lambda v: np.full(target_shape, v, dtype="int16")),
                st.lists(
                    elements,
                    min_size=int(np.prod(target_shape)),
                    max_size=int(np.prod(target_shape)),
                ).map(lambda v: np.array(v, dtype="int16").reshape(target_shape)),
            ),
            label="value",
        )
        return region, value

    def _write(self, handle: Handle, region: tuple[int | slice, ...], value: Any) -> None:
        if handle.version is not None:
            with pytest.raises(hubzarr.ReadOnlyError):
                handle.array[region] = value
        elif handle.deleted:
            # What a handle of a deleted branch may still do is open, but it must not change
            # any live ref, which the reads and invariants check.
            with contextlib.suppress(hubzarr.NotFoundError, hubzarr.ReadOnlyError):
                handle.array[region] = value
        else:
            handle.array[region] = value
            content = self.branches[handle.ref]
            content[region] = value
            touched = np.zeros(self.shape, dtype=bool)
            touched[region] = True
            for c in self._grid():
                if self._chunk(touched, c).any():
                    self.tokens[handle.ref][c] = self._token(content, c)
            self._check(handle.array, content, f"{handle.ref} after a write")

    def _handle(self, data: st.DataObject, *pools: Iterable[str]) -> Handle | None:
        """Draw a handle opened earlier, or open one at a ref drawn from ``pools`` (and keep
        it, sometimes); ``None`` if that ref is not live (and refuses to open)."""
        if self.handles and data.draw(st.booleans(), label="earlier handle"):
            return data.draw(st.sampled_from(self.handles), label="handle")
        ref = _pick(data, "ref", *pools)
        # Shares nothing with the other handles.
        reader = hubzarr.Hub(self.hub.root, storage_options=self.options)
        if self._content(ref) is None:
            with pytest.raises(hubzarr.NotFoundError):
                reader.load(f"{REPO}:{ref}")
            return None
        version = None if ref in self.branches else self.tags.get(ref, ref)
        handle = Handle(ref, version, reader.load(f"{REPO}:{ref}"))
        assert handle.array.read_only == (version is not None)
        if len(self.handles) < MAX_HANDLES and data.draw(st.booleans(), label="keep"):
            self.handles.append(handle)
        return handle

    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        handle = self._handle(data, self.branches, self.tags)
        if handle is not None:
            self._write(handle, *self._draw_write(data))

    @rule(data=st.data())
    def clear(self, data: st.DataObject) -> None:
        """Write the fill value over whole chunks: zarr deletes them, and where an ancestor
        holds one, the head records a tombstone."""
        handle = self._handle(data, self.branches)
        if handle is not None:
            region = tuple(
                data.draw(_chunk_span(size, chunk), label="chunks")
                for size, chunk in zip(self.shape, self.chunks, strict=True)
            )
            self._write(handle, region, 0)

    # -- tags and branches ---------------------------------------------------------------

    def _draw_creation(self, data: st.DataObject) -> tuple[str, str, np.ndarray[Any, Any] | None]:
        """Draw a source ref and a new name; return them with the content the new ref must
        have, or ``None`` if the creation must be refused."""
        source = _pick(data, "source", self.branches, [*self.tags, *self.sealed, *self.dropped])
        name = _pick(data, "name", (n for n in NAMES if not self._taken(n)), self.deleted)
        content = self._content(source)
        return source, name, None if content is None or self._taken(name) else content.copy()

    def _refusals(self, source: str, name: str) -> tuple[type[Exception], ...]:
        # With both a taken name and a missing source, either refusal is right.
        taken = (hubzarr.AlreadyExistsError,) if self._taken(name) else ()
        missing = (hubzarr.NotFoundError,) if self._content(source) is None else ()
        return taken + missing

    @rule(data=st.data())
    def tag(self, data: st.DataObject) -> None:
        source, name, content = self._draw_creation(data)
        if content is None:
            with pytest.raises(self._refusals(source, name)):
                self.hub.tag(f"{REPO}:{source}", name)
            return
        version = self.hub.tag(f"{REPO}:{source}", name)
        if source in self.branches:
            assert version not in self.sealed, "sealing a branch makes a new version"
            assert self.hub.log(f"{REPO}:{source}")[0].parent == version
        else:
            assert version == self.tags.get(source, source), "a tag of a version is that version"
        self.sealed[version] = content
        self.sealed_tokens.setdefault(version, dict(self._tokens_of(source)))
        self.tags[name] = version
        self._check(self.hub.load(f"{REPO}:{name}"), content, f"new tag {name}")

    @rule(data=st.data())
    def branch(self, data: st.DataObject) -> None:
        source, name, content = self._draw_creation(data)
        if content is None:
            with pytest.raises(self._refusals(source, name)):
                self.hub.branch(f"{REPO}:{source}", name)
            return
        head = self.hub.branch(f"{REPO}:{source}", name)
        entry = self.hub.log(f"{REPO}:{name}")[0]
        assert entry.id == head and not entry.sealed and entry.refs == (name,)
        assert entry.parent is not None
        if source in self.branches:
            assert entry.parent not in self.sealed, "branching a branch seals its head"
            self._seal(entry.parent, source)
        else:
            assert entry.parent == self.tags.get(source, source)
        self.tokens[name] = dict(self._tokens_of(source))
        self.branches[name] = content
        self._check(self.hub.load(f"{REPO}:{name}"), content, f"new branch {name}")

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        source = _pick(data, "source", self.branches, self.tags, self.deleted)
        if source not in self.branches:
            refusal = hubzarr.InvalidArgumentError if source in self.tags else hubzarr.NotFoundError
            with pytest.raises(refusal):
                self.hub.commit(f"{REPO}:{source}")
            return
        content = self.branches[source]
        version = self.hub.commit(f"{REPO}:{source}", "a commit")
        head = self.hub.log(f"{REPO}:{source}")[0]
        assert not head.sealed and head.parent == version
        # A new version, or the sealed one the head started from when it held no write.
        if version not in self.sealed:
            self._seal(version, source)
        self._check(self.hub.load(f"{REPO}:{version}"), content, f"commit of {source}")

    @rule(data=st.data())
    def revert(self, data: st.DataObject) -> None:
        """A branch back to the state of a tag or sealed version, as a new version."""
        branch = _pick(data, "branch", self.branches, self.tags, self.deleted)
        target = _pick(data, "target", self.tags, self.sealed, self.deleted, self.dropped)
        content = self._content(target)
        if branch not in self.branches or content is None:
            refusals: tuple[type[Exception], ...] = (hubzarr.NotFoundError,)
            if branch in self.tags:
                refusals += (hubzarr.InvalidArgumentError,)
            with pytest.raises(refusals):
                self.hub.revert(f"{REPO}:{branch}", target)
            return
        version = self.hub.revert(f"{REPO}:{branch}", target)
        head, made, base = self.hub.log(f"{REPO}:{branch}")[:3]
        assert (head.parent, made.id, made.parent) == (version, version, base.id)
        if base.id not in self.sealed:
            self._seal(base.id, branch)  # the head committed first
        # A chunk whose object differs from the target's is copied into the new version.
        ours, theirs = self.tokens[branch], self._tokens_of(target)
        self.tokens[branch] = {
            c: ours[c] if ours[c] == theirs[c] else self._token(content, c) for c in self._grid()
        }
        self.branches[branch] = content.copy()
        self._seal(version, branch)
        self._check(self.hub.load(f"{REPO}:{branch}"), content, f"{branch} reverted to {target}")

    @rule(data=st.data())
    def merge(self, data: st.DataObject) -> None:
        """A three-way merge of a branch, tag or sealed version into a branch, against their
        common ancestor, chunk by chunk (by object, as hubzarr compares): what one side
        changed is taken, the same bytes on both sides are fine, anything else is a conflict
        that changes nothing unless a strategy settles it."""
        into = _pick(data, "into", self.branches, self.tags, self.deleted)
        source = _pick(
            data, "source", self.branches, self.tags, self.sealed, self.deleted, self.dropped
        )
        strategy = data.draw(st.sampled_from([None, "ours", "theirs"]), label="strategy")
        merge = functools.partial(self.hub.merge, f"{REPO}:{into}", source, strategy=strategy)
        if into not in self.branches or source == into or self._content(source) is None:
            with pytest.raises((hubzarr.NotFoundError, hubzarr.InvalidArgumentError)):
                merge()
            for branch in (into, source):
                if branch in self.branches:
                    self._learn_seals(branch)  # committed before the source was found missing
            return
        ours_content, ours = self.branches[into], self.tokens[into]
        theirs_content, theirs = self._content(source), self._tokens_of(source)
        assert theirs_content is not None
        known = self.sealed.keys() | self.dropped.keys()
        failed: Exception | None = None
        try:
            version: str | None = merge()
        except (hubzarr.MergeConflictError, hubzarr.NotFoundError) as error:
            version, failed = None, error
        # Both sides were committed first (the merge's own version, if it made one, holds
        # the merged state): their sealed states, and their common ancestor.
        made = None  # (a merge with nothing to take returns the branch's sealed state)
        if version is not None and version not in known:
            made = version if self.hub.log(f"{REPO}:{version}")[0].merged else None
        for branch in (into, source):
            if branch in self.branches:
                self._learn_seals(branch, made=made)
        ours_state, theirs_state, base = self._merge_base(into, source, made)
        if isinstance(failed, hubzarr.NotFoundError):
            # Their common ancestor's state was dropped by retention: no three-way merge.
            assert base in self.dropped and "expired by gc" in str(failed), failed
            return
        if base == theirs_state:
            assert failed is None and version == ours_state, "nothing to merge"
            return
        result, tokens, conflicts = self._three_way(
            (self._tokens_of(base) if base else dict.fromkeys(self._grid()), ours, theirs),
            (ours_content, theirs_content),
            strategy,
        )
        if conflicts and strategy is None:
            assert failed is not None, f"conflicts in chunks {conflicts} were not reported"
            self._check(self.hub.load(f"{REPO}:{into}"), ours_content, "after a conflict")
            return
        assert failed is None, f"a merge the model finds clean failed: {failed}"
        log = self.hub.log(f"{REPO}:{into}", limit=2)
        assert version is not None and version == made and log[0].parent == version
        assert log[1].merged == (theirs_state,)
        self.branches[into], self.tokens[into] = result, tokens
        self._seal(version, into)
        self._check(self.hub.load(f"{REPO}:{into}"), result, f"{source} merged into {into}")

    def _merge_base(self, into: str, source: str, made: str | None) -> tuple[str, str, str | None]:
        """The sealed states a merge of ``source`` into ``into`` worked on (``made``: the
        version it made, if any), and their common ancestor."""
        log = self.hub.log(f"{REPO}:{into}", limit=3)
        ours = next(e.id for e in log if e.sealed and e.id != made)
        if source in self.branches:
            theirs = next(e.id for e in self.hub.log(f"{REPO}:{source}", limit=2) if e.sealed)
        else:
            theirs = self.tags.get(source, source)
        repo = Repository(self.hub.storage, parse_name(REPO, default_user="sm"))
        sync(repo.open())
        return ours, theirs, sync(repo.common_ancestor(ours, theirs))

    def _three_way(
        self,
        tokens: tuple[dict[tuple[int, ...], int | None], ...],
        contents: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
        strategy: str | None,
    ) -> tuple[np.ndarray[Any, Any], dict[tuple[int, ...], int | None], list[tuple[int, ...]]]:
        """The model's merge: the result, its objects, and the chunks in conflict."""
        base, ours, theirs = tokens
        ours_content, theirs_content = contents
        result, merged, conflicts = ours_content.copy(), dict(ours), []
        for c in self._grid():
            b, o, t = base[c], ours[c], theirs[c]
            if t in (o, b):
                continue  # theirs did not change it, or holds our object
            if o != b:
                same = o is not None and t is not None
                if same and np.array_equal(
                    self._chunk(ours_content, c), self._chunk(theirs_content, c)
                ):
                    continue  # the same bytes on both sides
                conflicts.append(c)
                if strategy != "theirs":
                    continue
            result[self._region(c)] = theirs_content[self._region(c)]
            merged[c] = self._token(result, c)  # copied into the merge's version
        return result, merged, conflicts

    @rule(data=st.data())
    def read_as_of(self, data: st.DataObject) -> None:
        """A branch as of each time its log shows: the newest version sealed by then."""
        source = _pick(data, "source", self.branches)
        if source not in self.branches:
            return
        sealed = [e for e in self.hub.log(f"{REPO}:{source}") if e.sealed]
        if not sealed:
            return
        when = data.draw(st.sampled_from([e.time for e in sealed]), label="as_of")
        expected = next(e.id for e in sealed if e.time <= when)
        if expected in self.dropped:
            with pytest.raises(hubzarr.NotFoundError, match="expired by gc"):
                self.hub.load_array(f"{REPO}:{source}", as_of=when)
            return
        array = self.hub.load_array(f"{REPO}:{source}", as_of=when)
        assert array.version == expected
        self._check(array, self.sealed[expected], f"{source} as of {when}")

    @rule(keep=st.integers(1, 3))
    def expire(self, keep: int) -> None:
        """gc with retention: old untagged sealed versions are dropped, and so is every
        version no ref reaches. No tag's version, no branch's newest ``keep`` sealed versions
        nor any version a branch's head starts from goes; what goes is refused by name
        afterwards, and everything else reads as before."""
        reachable = {e.id for ref in self._live for e in self.hub.log(f"{REPO}:{ref}")}
        report = self.hub.gc(REPO, grace=0, dry_run=False, keep_last=keep)
        repo = Repository(self.hub.storage, parse_name(REPO, default_user="sm"))
        sync(repo.open())
        gone = sync(repo.expired_versions())
        retained = (gone - self.dropped.keys()) & reachable
        assert report.expired == len(retained)
        assert not gone & set(self.tags.values())
        for branch in self.branches:
            sealed = [e.id for e in self.hub.log(f"{REPO}:{branch}") if e.sealed]
            assert not retained & set(sealed[:keep]), branch  # (an earlier gc kept fewer)
            # gc seals a head whose rewrites it frees: a version holding the branch's content.
            if sealed and sealed[0] not in self.sealed.keys() | self.dropped.keys():
                self._seal(sealed[0], branch)
        for version in [v for v in dict.fromkeys([*self.sealed, *gone]) if v in retained]:
            # (The array's first version, made by its creation, is not in the model.)
            self.dropped[version] = self.sealed.pop(version, None)
            with pytest.raises(hubzarr.NotFoundError, match="expired by gc"):
                self.hub.load(f"{REPO}:{version}")
        # What no ref reached is freed: refused by id from now on.
        for version in [v for v in self.sealed if v not in reachable]:
            self.dropped[version] = self.sealed.pop(version)
            with pytest.raises(hubzarr.NotFoundError):
                self.hub.load(f"{REPO}:{version}")

    # -- deletions -----------------------------------------------------------------------

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = _pick(data, "name", self.tags, self.branches.keys() - {DEFAULT}, self.deleted)
        # The name's own kind first (what shrinking prefers); the other kind is refused.
        kinds = ["tag", "branch"] if name in self.tags else ["branch", "tag"]
        kind = data.draw(st.sampled_from(kinds), label="kind")
        delete = self.hub.delete_tag if kind == "tag" else self.hub.delete_branch
        live = self.tags if kind == "tag" else self.branches
        if kind == "branch" and name == DEFAULT:
            with pytest.raises(hubzarr.InvalidArgumentError):
                delete(REPO, name)
        elif name not in live:
            with pytest.raises(hubzarr.NotFoundError):
                delete(REPO, name)
        else:
            version = delete(REPO, name)
            if kind == "tag":
                assert version == self.tags.pop(name)
            else:
                del self.branches[name]
            self.deleted.add(name)
            for handle in self.handles:
                handle.deleted = handle.deleted or handle.ref == name

    # -- reads ---------------------------------------------------------------------------

    def _check_handle(self, handle: Handle) -> None:
        if handle.version is None and handle.deleted:
            return  # what a deleted branch's handle reads is open (see _write)
        what = f"handle at {handle.ref}"
        if handle.version is None:
            expected = self.branches[handle.ref]
        else:
            expected = self.sealed.get(handle.version, self.dropped.get(handle.version))
            assert expected is not None, what
        # A deleted tag's handle, or one at a version gc dropped, may refuse to read, but
        # never reads other data.
        gone = handle.deleted or handle.version in self.dropped
        with contextlib.suppress(*((hubzarr.NotFoundError,) if gone else ())):
            self._check(handle.array, expected, what)
            if handle.version is not None:  # a tag or version id: pinned for good
                assert handle.array.version == handle.version, what
            else:  # a branch: the handle followed it to its current, open head
                repo = Repository(self.hub.storage, parse_name(REPO, default_user="sm"))
                current = sync(repo.branch_head(handle.ref))
                assert handle.array.version == current, what
                assert current not in self.sealed, what

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        handle = self._handle(
            data, self.branches, self.tags, self.deleted, self.sealed, self.dropped
        )
        if handle is not None:
            self._check_handle(handle)

    @rule()
    def read_everything(self) -> None:
        for ref in [*self.branches, *self.tags, *self.sealed]:
            expected = self._content(ref)
            assert expected is not None
            self._check(self.hub.load(f"{REPO}:{ref}"), expected, ref)
        for handle in self.handles:
            self._check_handle(handle)
        # A ref's log starts at the ref (named there), runs through versions the model knows
        # as sealed back to the first, and names no deleted ref.
        for name in self._live:
            head, *older = entries = self.hub.log(f"{REPO}:{name}")
            assert (f"tag: {name}" if name in self.tags else name) in head.refs
            assert head.sealed == (name in self.tags)
            assert head.id == self.tags.get(name, head.id)
            assert all(e.sealed and (e.id in self.sealed or e.id in self.dropped) for e in older)
            assert all(e.expired == (e.id in self.dropped) for e in entries)
            assert [e.parent for e in entries] == [e.id for e in older] + [None]
            assert {r.removeprefix("tag: ") for e in entries for r in e.refs} <= self._live

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def refs_match_the_model(self) -> None:
        repo = Repository(self.hub.storage, parse_name(REPO, default_user="sm"))
        refs = sync(repo.list_refs())
        assert {n for n, (kind, _) in refs.items() if kind == "branch"} == set(self.branches)
        assert {n: v for n, (kind, v) in refs.items() if kind == "tag"} == self.tags


def test_versions_follow_the_model(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Checkpoints every few generations, so that both kinds of manifest, and deletions carried
    # through checkpoints, are read back.
    monkeypatch.setattr(records, "CHECKPOINT_EVERY", 3)
    # One process, nothing in flight: gc may take versions as soon as no ref reaches them,
    # and collects as if an hour had passed, so that what it takes depends on no clock.
    monkeypatch.setattr(hubzarr.collect, "RECORD_GRACE_S", 0.0)
    monkeypatch.setattr(hubzarr.collect, "_now", lambda: time.time() + 3600)
    machine = type("Machine", (VersionMachine,), {"root": root})
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_versions_follow_the_model_on_s3(
    s3_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fewer, shorter runs: every step is several requests to the moto server.
    monkeypatch.setattr(records, "CHECKPOINT_EVERY", 3)
    monkeypatch.setattr(hubzarr.collect, "RECORD_GRACE_S", 0.0)
    monkeypatch.setattr(hubzarr.collect, "_now", lambda: time.time() + 3600)
    machine = type(
        "Machine", (VersionMachine,), {"root": s3_backend.root, "options": s3_backend.options}
    )
    run_state_machine_as_test(
        machine, settings=settings(SETTINGS, max_examples=60, stateful_step_count=15)
    )
