"""A griffe extension: the docstrings' Sphinx roles as Markdown for the API reference.

hubzarr's numpydoc docstrings cross-reference with Sphinx roles (``:meth:`Hub.tag```,
``:class:`~hubzarr.arrays.HubArray```). mkdocstrings renders Markdown, so each role becomes a
link when its target is on the API reference page (a public name or a public member of one),
and inline code otherwise (a private helper, a module, a builtin).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:meth|func|class|attr|mod|exc|data|obj|const):`(~?)([^`<>]+?)`")


def _documented() -> set[str]:
    spec = importlib.util.spec_from_file_location(
        "_hub_hooks", Path(__file__).with_name("hooks.py")
    )
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return set(hooks.public_names().values())


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the package once it is loaded."""

    def __init__(self) -> None:
        self._documented: set[str] | None = None

    def _target(self, obj: griffe.Object, name: str) -> str | None:
        """The documented path ``name`` resolves to from ``obj``, or None."""
        if self._documented is None:
            self._documented = _documented()
        try:
            path = (
                name if name.startswith("hubzarr.") else obj.resolve(name.split(".", maxsplit=1)[0])
            )
        except (griffe.NameResolutionError, KeyError, ValueError):
            return None
        if not name.startswith("hubzarr.") and "." in name:
            path = path + "." + name.split(".", 1)[1]
        for root in self._documented:
            if path == root:
                return path
            rest = path.removeprefix(root + ".")
            if rest != path and "." not in rest and not rest.startswith("_"):
                return path  # a public member of a documented class
        return None

    def _rewrite(self, obj: griffe.Object) -> None:
        docstring = obj.docstring
        if docstring is not None and ":" in docstring.value:

            def link(match: re.Match[str]) -> str:
                short, name = match.group(1), match.group(2).strip().removesuffix("()")
                shown = name.rsplit(".", 1)[-1] if short else name
                target = self._target(obj, name)
                return f"[`{shown}`][{target}]" if target else f"`{shown}`"

            docstring.value = _ROLE.sub(link, docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._rewrite(member)  # type: ignore[arg-type]

    def on_package(self, *, pkg: griffe.Module, **_: Any) -> None:
        self._rewrite(pkg)
