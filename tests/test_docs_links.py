"""Every relative link in README.md and docs/*.md points to a file that exists and, when it
names an anchor (`page.md#section`), to a heading of that file."""

import re
from pathlib import Path

import pytest
from conftest import REPO

PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def without_code(text):
    """The text with fenced blocks and code spans blanked (a link there is not a link)."""
    return _CODE.sub("", _FENCE.sub("", text))


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """Every anchor the headings of the Markdown file at `path` define (GitHub numbers the
    repeats of one slug: x, x-1, x-2)."""
    seen, out = {}, set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def broken_links(page):
    """The relative links of `page` whose file or anchor does not exist, with the reason."""
    bad = []
    for target in _LINK.findall(without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):          # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            bad.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            bad.append(f"{target}: no heading with anchor #{anchor} in {path.name}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# A `code` title: here\n\n## Two words\n",
                                       encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-code-title-here) [ok](other.md#two-words) [ok](#top)\n"
                    "# Top\n[gone](missing.md) [bad anchor](other.md#three-words)\n"
                    "`[in code](missing2.md)`\n```\n[in a block](missing3.md)\n```\n"
                    "[web](https://example.com/x.md)\n", encoding="utf-8")
    bad = broken_links(page)
    assert len(bad) == 2
    assert bad[0].startswith("missing.md: no file")
    assert bad[1].startswith("other.md#three-words: no heading")


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines: move detail to a docs/ page"
