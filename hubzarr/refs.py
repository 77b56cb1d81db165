"""Branches and tags: reading them, creating them once, moving a branch, deleting either.

A branch's file names its head and is the one record that changes (the seal protocol moves it,
:mod:`hubzarr.versions`); a tag's file is created once. Tags and branches live in separate
folders, so put-if-absent on the ref's own file cannot stop a tag and a branch of one name from
both being created: a new ref first claims its name in ``refs/names/`` (shared by both kinds),
and exactly one claimant wins. The claim holds the whole ref, so a creator that died after
claiming is finished by the next one to try the name. Deleting a ref overwrites its file with a
:class:`~hubzarr.records.DeletedRef` marker and leaves the claim: a deleted name is never reused,
so a name saved in a notebook never comes to mean other data.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from hubzarr.errors import AlreadyExistsError
from hubzarr.files import RepoFiles
from hubzarr.records import (
    BranchRef,
    DeletedRef,
    NameClaim,
    RefKind,
    TagRef,
    VersionRecord,
    parse_ref,
)

__all__ = ["Refs"]

_KINDS: tuple[RefKind, ...] = ("branch", "tag")


class Refs:
    """The branches and tags of one repository (its files, opened)."""

    def __init__(self, files: RepoFiles) -> None:
        self.files = files

    async def read(self, kind: RefKind, ref: str) -> BranchRef | TagRef | DeletedRef | None:
        """Read the file of the ``kind`` named ``ref``: the ref, its deletion marker, or
        ``None`` if it never existed."""

        def parse(data: dict[str, Any], where: str) -> BranchRef | TagRef | DeletedRef:
            return parse_ref(data, where, kind)

        return await self.files.read_record(self.files.ref_path(kind, ref), parse)

    async def live(self, kind: RefKind, ref: str) -> str | None:
        """The version a live ref of ``kind`` points at; ``None`` if absent or deleted.

        The default branch's file, if missing (its creator died right after publishing
        ``repo.json``), is created first: ``repo.json`` determines it.
        """
        record = await self.live_record(kind, ref)
        return None if record is None else record.version

    async def live_record(self, kind: RefKind, ref: str) -> BranchRef | TagRef | None:
        """The record of a live ref of ``kind`` (:meth:`live`)."""
        record = await self.read(kind, ref)
        if record is None and kind == "branch" and ref == self.files.info.default_branch:
            head = await self.recover_default_branch()
            return None if head is None else BranchRef(head)
        return None if record is None or isinstance(record, DeletedRef) else record

    async def recover_default_branch(self) -> str | None:
        """Create the first version's record and the default branch, which ``repo.json``
        fully determines (the creator writes them right after it, and any opener finishes a
        creation that stopped halfway); return the branch's head, ``None`` if it cannot be
        written (a read-only root) or was deleted."""
        info, files = self.files.info, self.files
        if files.storage.read_only:
            return None
        root = VersionRecord(info.root_version, None, (), info.created)
        for path, record in (
            (files.version_path(root.id), root.to_dict()),
            (files.ref_path("branch", info.default_branch), BranchRef(root.id).to_dict()),
        ):
            with contextlib.suppress(AlreadyExistsError):
                await files.create_record(path, record)
        # Read directly, not through live(): a ref that cannot be created or read back must
        # not send it here again, and again.
        found = await self.read("branch", info.default_branch)
        return found.version if isinstance(found, BranchRef) else None

    async def deleted(self, kind: RefKind, ref: str) -> bool:
        """Whether a ref of ``kind`` named ``ref`` existed and was deleted."""
        return isinstance(await self.read(kind, ref), DeletedRef)

    async def names(self, kind: RefKind) -> list[str]:
        """The names of the files in the folder of ``kind`` (live and deleted refs)."""
        folder = "branches" if kind == "branch" else "tags"
        listed = await self.files.storage.list_dir(self.files.path("refs", folder))
        return [n.removesuffix(".json") for n in listed if n.endswith(".json")]

    async def check_free(self, ref: str, what: str) -> None:
        """Refuse a name a ref holds, or held.

        Raises
        ------
        AlreadyExistsError
            If a tag or branch of that name exists or existed.
        """
        branch, tag = await asyncio.gather(self.live("branch", ref), self.live("tag", ref))
        if branch is not None or tag is not None:
            kind = "branch" if branch is not None else "tag"
            raise AlreadyExistsError(
                f"{self.files.name} already has a {kind} named {ref!r}; choose another {what} name"
            )
        for kind in _KINDS:
            if await self.deleted(kind, ref):
                raise AlreadyExistsError(self.reuse_message(kind, ref, what))

    def reuse_message(self, kind: str, ref: str, what: str) -> str:
        """Why the name of a deleted ref cannot be taken again."""
        return (
            f"{self.files.name} had a {kind} named {ref!r}, which was deleted; ref names are "
            f"never reused, so a name someone saved never silently means other data: choose "
            f"another {what} name"
        )

    async def publish(self, ref: str, record: BranchRef | TagRef) -> None:
        """Create a new ref: first claim its name, then write its own file.

        Raises
        ------
        AlreadyExistsError
            If the name is claimed already (exactly one concurrent creator wins).
        """
        claim = NameClaim(record)
        try:
            await self.files.create_record(self.files.claim_path(ref), claim.to_dict())
        except AlreadyExistsError:
            taken = await self.finish_claim(ref)
            raise AlreadyExistsError(
                f"{self.files.name} already has a {taken or claim.kind} named {ref!r}; choose "
                f"another {claim.kind} name"
            ) from None
        await self.files.create_or_match(self.files.ref_path(claim.kind, ref), claim.to_dict())

    async def finish_claim(self, ref: str) -> RefKind | None:
        """Create the ref a claim holds if its creator died before writing it; return its kind
        (``None`` if the name is not claimed)."""
        path = self.files.claim_path(ref)
        claim = await self.files.read_record(path, NameClaim.parse)
        if claim is None:
            return None
        if await self.read(claim.kind, ref) is None:
            with contextlib.suppress(AlreadyExistsError):
                await self.files.create_or_match(
                    self.files.ref_path(claim.kind, ref), claim.to_dict()
                )
        return claim.kind

    async def mark_deleted(self, kind: RefKind, ref: str, was: str) -> None:
        """Overwrite a ref's file with its deletion marker (its claim stays)."""
        marker = DeletedRef(was, time.time())
        await self.files.write_record(
            self.files.ref_path(kind, ref), marker.to_dict(), durable=True
        )

    async def move_branch(self, branch: str, old: str, new: str) -> None:
        """Move ``branch`` from ``old`` to ``new`` if it is still at ``old``.

        Only the seal of ``old`` moves the branch off ``old``, and its successor is fixed by the
        seal record, so every finisher writes the same content.
        """
        current = await self.read("branch", branch)
        if (
            isinstance(current, BranchRef)
            and current.head == old
            and not self.files.storage.read_only
        ):
            # ``new`` most often continues ``old`` (a copy's move starts it elsewhere: the
            # hint is then wrong, which costs an opener one round trip, nothing else).
            record = BranchRef(new, base=old).to_dict()
            await self.files.write_record(
                self.files.ref_path("branch", branch), record, durable=True
            )
