"""The name grammar ``[user/]name[:ref]``: what it accepts, what it refuses, and why."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hubzarr
from hubzarr.errors import HubError, InvalidArgumentError, InvalidNameError
from hubzarr.names import MAX_COMPONENT_LENGTH, MAX_REF_LENGTH, Name, check_ref, parse_name
from hubzarr.storage import Storage

# Independent, deliberately strict restatements of the grammar (not the module's own regexes).
STRICT_COMPONENT = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?", re.ASCII)
STRICT_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)

PROPERTY_SETTINGS = settings(
    max_examples=300,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def parse(name: Any) -> Name:
    return parse_name(name, default_user="library")


# -- valid names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "user", "repo", "ref"),
    [
        ("alice/mnist", "alice", "mnist", None),
        ("alice/mnist:v1", "alice", "mnist", "v1"),
        ("mnist", "library", "mnist", None),
        ("mnist:latest", "library", "mnist", "latest"),
        ("a/b", "a", "b", None),
        ("0/9", "0", "9", None),
        ("my.org/data.set", "my.org", "data.set", None),
        ("my_org/data__set", "my_org", "data__set", None),
        ("my-org/data---set", "my-org", "data---set", None),
        ("alice/mnist:v1.0.2-rc_1", "alice", "mnist", "v1.0.2-rc_1"),
        ("alice/mnist:Main", "alice", "mnist", "Main"),
        ("alice/mnist:_private", "alice", "mnist", "_private"),
        ("alice/mnist:a..b", "alice", "mnist", "a..b"),
        ("alice/mnist:v1-", "alice", "mnist", "v1-"),
        ("alice/mnist:01a1feec4e849f05fd45", "alice", "mnist", "01a1feec4e849f05fd45"),
        ("alice/mnist:0", "alice", "mnist", "0"),
    ],
)
def test_valid_names(text: str, user: str, repo: str, ref: str | None) -> None:
    name = parse(text)
    assert name == Name(user, repo, ref)
    assert (name.user, name.repo, name.ref) == (user, repo, ref)
    assert name.repository == f"{user}/{repo}"


def test_bare_name_takes_the_default_namespace() -> None:
    assert parse_name("mnist", default_user="alice") == Name("alice", "mnist", None)
    assert parse_name("mnist:v2", default_user="bob") == Name("bob", "mnist", "v2")
    # An explicit user wins over the default one.
    assert parse_name("carol/mnist", default_user="alice").user == "carol"


def test_str_and_with_ref() -> None:
    name = parse("alice/mnist:v1")
    assert str(name) == "alice/mnist:v1"
    assert str(name.with_ref(None)) == "alice/mnist"
    assert name.with_ref("v2") == Name("alice", "mnist", "v2")
    assert str(parse("mnist")) == "library/mnist"


def test_name_is_immutable() -> None:
    name = parse("alice/mnist")
    with pytest.raises(AttributeError):
        name.user = "mallory"  # type: ignore[misc]


def test_maximum_lengths_are_accepted() -> None:
    user = "u" * MAX_COMPONENT_LENGTH
    repo = "r" * MAX_COMPONENT_LENGTH
    ref = "v" * MAX_REF_LENGTH
    assert MAX_COMPONENT_LENGTH == 64
    assert MAX_REF_LENGTH == 128
    assert parse(f"{user}/{repo}:{ref}") == Name(user, repo, ref)


# -- malformed names -----------------------------------------------------------------------

MALFORMED = [
    # (text, words the message must contain)
    ("../x", ["user", "'..'"]),
    ("./x", ["user", "'.'"]),
    ("..", ["repository name", "'..'"]),
    ("a/../b", ["only one '/'"]),
    ("/abs/path", ["only one '/'"]),
    ("a/b/c", ["only one '/'"]),
    ("/x", ["user", "empty"]),
    ("x/", ["repository name", "empty"]),
    ("/", ["user", "empty"]),
    ("", ["repository name", "empty"]),
    ("x:", ["ref", "empty"]),
    ("alice/x:", ["ref", "empty"]),
    (":v1", ["repository name", "empty"]),
    ("s3://bucket/x", ["URL"]),
    ("file:///etc", ["URL"]),
    ("memory://x", ["URL"]),
    ("Alice/x", ["user", "'Alice'", "lowercase"]),
    ("alice/MNIST", ["repository name", "'MNIST'"]),
    ("\u0430lice/x", ["user"]),  # Cyrillic 'a'
    ("alice/mn\u0456st", ["repository name"]),  # Cyrillic 'i'
    ("alice/x\uff11", ["repository name"]),  # fullwidth digit one
    ("\uff41lice/x", ["user"]),  # fullwidth 'a'
    ("alice/x:v\uff11", ["ref"]),
    ("alice/x:v\u0430", ["ref"]),
    ("alice/x\n", ["repository name"]),
    ("alice/x:v1\n", ["ref"]),
    ("\nalice/x", ["user"]),
    ("alice/x:v1:v2", ["one ':'"]),
    ("alice/x::v1", ["one ':'"]),
    ("u" * 65 + "/x", ["user", "at most 64"]),
    ("alice/" + "r" * 65, ["repository name", "at most 64"]),
    ("alice/x:" + "v" * 129, ["ref", "at most 128"]),
    ("alice/x\x00", ["repository name"]),
    ("alice\x00/x", ["user"]),
    ("alice/x:v\x001", ["ref"]),
    ("alice\\x", ["repository name"]),
    ("alice/..\\x", ["repository name"]),
    ("alice/x:v\\1", ["ref"]),
    ("alice/ x", ["repository name"]),
    ("alice /x", ["user"]),
    ("alice/x :v1", ["repository name"]),
    ("alice/x: v1", ["ref"]),
    ("alice/x:v 1", ["ref"]),
    ("alice/x\t", ["repository name"]),
    ("alice/x:a/b", ["ref"]),
    ("alice/x:..", ["ref"]),
    ("alice/x:.hidden", ["ref"]),
    ("alice/x:-flag", ["ref"]),
    ("alice/.x", ["repository name"]),
    ("alice/x.", ["repository name"]),
    ("alice/-x", ["repository name"]),
    ("alice/x_", ["repository name"]),
    ("alice/a___b", ["repository name"]),
    ("alice/a..b", ["repository name"]),
    ("alice/a._b", ["repository name"]),
]


@pytest.mark.parametrize(("text", "words"), MALFORMED)
def test_malformed_names_are_refused(text: str, words: list[str]) -> None:
    with pytest.raises(InvalidNameError) as info:
        parse(text)
    message = str(info.value)
    for word in words:
        assert word in message, message
    # A name error is a caller's bug: it is an InvalidArgumentError, a ValueError, a HubError.
    assert isinstance(info.value, InvalidArgumentError)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, HubError)


def test_message_shows_the_offending_name_and_part() -> None:
    with pytest.raises(
        InvalidNameError, match=r"invalid name 'alice/B_ad'.*repository name 'B_ad'"
    ):
        parse("alice/B_ad")
    with pytest.raises(InvalidNameError, match=r"invalid name 'Mallory/x'.*user 'Mallory'"):
        parse("Mallory/x")
    with pytest.raises(InvalidNameError, match=r"invalid ref 'v 1'"):
        parse("alice/x:v 1")


def test_message_of_a_huge_name_is_truncated() -> None:
    with pytest.raises(InvalidNameError) as info:
        parse("alice/" + "X" * 10_000)
    assert len(str(info.value)) < 500
    assert "..." in str(info.value)


def test_invalid_default_namespace_is_refused() -> None:
    with pytest.raises(InvalidNameError, match="default namespace"):
        parse_name("mnist", default_user="Bad Namespace")
    with pytest.raises(InvalidNameError, match="default namespace"):
        parse_name("mnist", default_user="a/b")
    with pytest.raises(InvalidNameError, match="default namespace"):
        parse_name("mnist", default_user="")
    # An explicit user does not need the default one.
    assert parse_name("alice/mnist", default_user="Bad Namespace").user == "alice"


@pytest.mark.parametrize("value", [None, b"alice/x", 42, ["alice/x"], Path("alice/x")])
def test_non_string_names_are_refused(value: Any) -> None:
    with pytest.raises(InvalidNameError, match="must be a string") as info:
        parse(value)
    assert type(value).__name__ in str(info.value)


# -- check_ref -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref", ["v1", "main", "Main", "_x", "0", "v1.0.0-rc.1", "a..b", "x-", "r" * 128]
)
def test_check_ref_accepts(ref: str) -> None:
    assert check_ref(ref) is ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        ".",
        "..",
        ".v1",
        "-v1",
        "a/b",
        "../x",
        "v1\n",
        "v 1",
        "v\\1",
        "v\x001",
        "v:1",
        "v\u0430",
        "v\uff11",
        "r" * 129,
    ],
)
def test_check_ref_refuses(ref: str) -> None:
    with pytest.raises(InvalidNameError, match="ref"):
        check_ref(ref)


def test_check_ref_names_what_the_ref_is() -> None:
    with pytest.raises(InvalidNameError, match=r"invalid tag 'bad tag'"):
        check_ref("bad tag", what="tag")
    with pytest.raises(InvalidNameError, match=r"the branch is empty"):
        check_ref("", what="branch")
    with pytest.raises(InvalidNameError, match=r"the tag must be a string, not int"):
        check_ref(1, what="tag")  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError, match=r"the ref must be a string, not NoneType"):
        check_ref(None)  # type: ignore[arg-type]


# -- names are checked before any I/O ------------------------------------------------------


class _NoIOStorage(Storage):
    """A storage on which any I/O fails the test."""

    url = "memory://no-io"

    def _refuse(self, *args: Any) -> NoReturn:
        raise AssertionError(f"I/O before the name was checked: {args!r}")

    async def read(self, path: str) -> bytes | None:
        self._refuse("read", path)

    async def size(self, path: str) -> int | None:
        self._refuse("size", path)

    async def write(self, path: str, data: Any, *, durable: bool = False) -> None:
        self._refuse("write", path)

    async def create(
        self, path: str, data: Any, *, durable: bool = True, unique: bool = True
    ) -> None:
        self._refuse("create", path)

    async def delete(self, path: str) -> None:
        self._refuse("delete", path)

    async def delete_prefix(self, prefix: str) -> None:
        self._refuse("delete_prefix", prefix)

    async def list(self, prefix: str) -> dict[str, int]:
        self._refuse("list", prefix)

    async def list_dir(self, prefix: str) -> list[str]:
        self._refuse("list_dir", prefix)

    async def list_detailed(
        self, prefix: str, *, temporaries: bool = False
    ) -> dict[str, tuple[int, float]]:
        self._refuse("list_detailed", prefix)


@pytest.fixture
def no_io_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> hubzarr.Hub:
    """A hub whose storage fails the test on any I/O."""

    def open_no_io(*args: Any, **kwargs: Any) -> Storage:
        return _NoIOStorage()

    for module in ("hubzarr.api", "hubzarr.cache"):
        monkeypatch.setattr(importlib.import_module(module), "open_storage", open_no_io)
    return hubzarr.Hub(tmp_path / "hub")


BAD_NAMES = ["../x", "a/../b", "/abs/path", "Alice/x", "alice/x\n", "s3://bucket/x", "x:"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_hub_checks_names_before_any_io(no_io_hub: hubzarr.Hub, bad: str, tmp_path: Path) -> None:
    calls = [
        lambda: no_io_hub.load(bad),
        lambda: no_io_hub.load(bad, mode="r"),
        lambda: no_io_hub.array((4,), name=bad),
        lambda: no_io_hub.store(bad),
        lambda: no_io_hub.store(bad, mode="w-"),
        lambda: no_io_hub.tag(bad, "v9"),
        lambda: no_io_hub.branch(bad, "b9"),
        lambda: no_io_hub.log(bad),
        lambda: no_io_hub.delete(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidNameError):
            call()
    assert not (tmp_path / "hub").exists()


@pytest.mark.parametrize("bad", ["bad tag", "../x", ""])
def test_hub_checks_new_ref_names_before_any_io(no_io_hub: hubzarr.Hub, bad: str) -> None:
    # The repository name is fine; the new tag or branch name is not. Names are checked
    # before any I/O, so this is an InvalidNameError raised without touching the storage.
    with pytest.raises(InvalidNameError, match="tag"):
        no_io_hub.tag("alice/x", bad)
    with pytest.raises(InvalidNameError, match="branch"):
        no_io_hub.branch("alice/x", bad)


def test_malformed_new_ref_of_a_missing_repository_is_a_name_error(local_root: str) -> None:
    # Seen from a caller: a malformed tag or branch name is reported as such, whether or not
    # the repository exists (not as "no repository").
    hub = hubzarr.Hub(local_root)
    with pytest.raises(InvalidNameError, match="invalid tag 'bad tag'"):
        hub.tag("alice/missing", "bad tag")
    with pytest.raises(InvalidNameError, match=r"invalid branch '\.\./x'"):
        hub.branch("alice/missing", "../x")


# -- properties ----------------------------------------------------------------------------

_TRICKY_CHARS = "ab09Z/:._-\\\x00\n \t@%~\u0430\uff11\u212a\u0131\u00e9\u200b\ufeff"
_TRICKY_TOKENS = st.sampled_from([*_TRICKY_CHARS, "..", "://", "alice", "/..", "v1"])
_ANY_TEXT = st.one_of(
    st.text(),
    st.text(alphabet=_TRICKY_CHARS, max_size=30),
    st.lists(_TRICKY_TOKENS, max_size=12).map("".join),
)


def _assert_safe(part: str, pattern: re.Pattern[str]) -> None:
    assert pattern.fullmatch(part), part
    assert part.isascii()
    for bad in ("/", "\\", "\x00", "\n", ":"):
        assert bad not in part
    assert part not in (".", "..")


@PROPERTY_SETTINGS
@given(text=_ANY_TEXT, default_user=st.one_of(st.just("library"), _ANY_TEXT))
def test_any_text_is_refused_or_safe(text: str, default_user: str) -> None:
    try:
        name = parse_name(text, default_user=default_user)
    except InvalidNameError:
        return
    _assert_safe(name.user, STRICT_COMPONENT)
    _assert_safe(name.repo, STRICT_COMPONENT)
    if name.ref is not None:
        _assert_safe(name.ref, STRICT_REF)
    # What was accepted parses again to the same name.
    assert parse_name(str(name), default_user="other") == name


_COMPONENTS = st.from_regex(
    r"[a-z0-9]{1,8}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,8}){0,3}", fullmatch=True
)
_REFS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,40}", fullmatch=True)


@PROPERTY_SETTINGS
@given(user=_COMPONENTS, repo=_COMPONENTS, ref=st.one_of(st.none(), _REFS))
def test_round_trip(user: str, repo: str, ref: str | None) -> None:
    text = f"{user}/{repo}" if ref is None else f"{user}/{repo}:{ref}"
    name = parse(text)
    assert str(name) == text
    assert (name.user, name.repo, name.ref) == (user, repo, ref)
    if ref is not None:
        assert check_ref(ref) == ref


@PROPERTY_SETTINGS
@given(text=_ANY_TEXT)
def test_check_ref_is_refused_or_safe(text: str) -> None:
    try:
        check_ref(text)
    except InvalidNameError:
        return
    _assert_safe(text, STRICT_REF)
