"""Every relative link in README.md and docs/*.md points at a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.DOTALL | re.MULTILINE)
_EXTERNAL = ("http://", "https://", "mailto:")


def _links(text: str) -> list[str]:
    prose = _FENCE.sub("", text)
    prose = re.sub(r"`[^`\n]*`", "", prose)  # inline code is not a link
    return _LINK.findall(prose)


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.*?)\s*#*$", _FENCE.sub("", markdown.read_text()), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_there_are_documents_to_check() -> None:
    assert ROOT / "README.md" in DOCUMENTS
    assert len(DOCUMENTS) > 3


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    broken = []
    for target in _links(document.read_text()):
        if target.startswith(_EXTERNAL):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (document.parent / path_part).resolve() if path_part else document
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor}")
    assert broken == [], f"{document.relative_to(ROOT)}: broken links"


def test_the_link_pattern_sees_links_and_skips_code() -> None:
    text = "see [a](docs/a.md#x) and ![img](i.png)\n```sh\n[no](nope.md)\n```\n`[no](code.md)` [b](https://e.x)"
    assert _links(text) == ["docs/a.md#x", "https://e.x"]


def test_the_readme_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
    assert ". .venv/bin/activate" in readme
    assert "pipx install ." in readme
