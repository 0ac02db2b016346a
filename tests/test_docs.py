"""The README is the first page and links into ``docs/`` (the site ``mkdocs build --strict`` checks
in ``.ci/run``); GitHub renders the README alone, so its own links are checked here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub and mkdocs make of a page's headings."""
    anchors = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_every_relative_link_of_the_readme_reaches_a_file_and_its_heading():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [target for target in LINK.findall(text) if "://" not in target]
    assert len(links) >= 10
    broken = []
    for target in links:
        path, _, anchor = target.partition("#")
        page = ROOT / path
        if not page.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(page):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken


def test_every_page_of_the_docs_is_in_the_site_navigation():
    navigation = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert [page for page in pages if page not in navigation] == []
    assert len(pages) >= 10
