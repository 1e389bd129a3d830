"""Every repository path the README and the docs name exists (a renamed module leaves no
stale mention behind)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} | {".ci"}
# A path in backticks or a Markdown link: starts with a top-level directory or file.
MENTION = re.compile(r"`([^`\s]+)`|\]\(([^)\s#]+)")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Written by deploy/make-secrets.sh on the user's machine, git-ignored: named, never committed.
GENERATED = ("deploy/secrets/", "deploy/.env")


def _mentions(page: Path) -> list[str]:
    found = []
    for match in MENTION.finditer(page.read_text()):
        token = (match.group(1) or match.group(2)).rstrip(".,:;)")
        token = token.split("::")[0]  # a test id: path::name
        first = token.split("/")[0]
        if "/" in token and first in TOP and not token.startswith(("http", "/")):
            found.append(token)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_a_page_names_exists(page: Path) -> None:
    missing = []
    for token in _mentions(page):
        if any(ch in token for ch in "<>{}$") or token.startswith(GENERATED):
            continue  # a pattern (`tests/<tier>/...`) or a file a script writes
        if not list(ROOT.glob(token)) and not (page.parent / token).exists():
            missing.append(token)
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_check_sees_paths() -> None:
    assert "projections/catalogue.py" in _mentions(ROOT / "docs" / "kpis.md")
