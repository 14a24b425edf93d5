"""The README is a short front door and every relative link of the documentation resolves.

README.md and docs/*.md are read as GitHub renders them: links and images outside code (fenced blocks
and inline code spans are skipped), reference definitions and HTML ``src``/``href`` included. A
relative target must be an existing file; a ``#fragment`` must name a heading of the target page (or
of the page itself) by GitHub's slug rule, or an explicit ``id``/``name`` anchor."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 260
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<[a-z]+\b[^>]*?\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code and the front matter, inline code spans blanked unless not asked."""
    lines = text.split("\n")
    out, fence, start = [], None, 0
    if lines and lines[0] == "---":  # YAML front matter (the Space's settings), not rendered as Markdown
        end = next((i for i in range(1, len(lines)) if lines[i] == "---"), None)
        start = end + 1 if end is not None else 0
    for i in range(start, len(lines)):
        line = lines[i]
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                fence = None
            continue
        if blank_code:
            line = re.sub(r"(`+)(?:(?!\1).)+?\1", lambda c: " " * len(c.group(0)), line)
        out.append((i + 1, line))
    return out


def heading_text(raw: str) -> str:
    """A heading's text as rendered: code spans keep their content, links their text, emphasis goes."""
    text = re.sub(r"`+([^`]*)`+", r"\1", raw)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("*", "").strip()


def slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation and symbols dropped, spaces to hyphens."""
    kept = "".join(c for c in text.lower() if c in "-_ " or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every fragment a page answers to: heading slugs (repeats get -1, -2, ...) and explicit ids."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(text, blank_code=False):
        out.update(HTML_ANCHOR.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(heading_text(m.group(2) or ""))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code."""
    out = []
    for no, line in prose_lines(text):
        targets = INLINE_LINK.findall(line) + HTML_LINK.findall(line)
        m = REF_DEF.match(line)
        if m:
            targets.append(m.group(1))
        out += [(no, t[1:-1] if t.startswith("<") else t) for t in targets]
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """One line per link of ``page`` that does not resolve (empty when all do); paths named from ``root``."""
    problems = []
    for no, target in links(page.read_text(encoding="utf-8")):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # a web address: not checked here (no network)
        path_part, _, fragment = target.partition("#")
        where = f"{page.relative_to(root)}:{no}: {target}"
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page
        if path_part.startswith("/"):
            problems.append(f"{where}: absolute path (use a relative link)")
            continue
        if not dest.is_file():
            problems.append(f"{where}: no such file")
            continue
        if fragment:
            if dest.suffix.lower() != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif unquote(fragment).lower() not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading with the anchor #{fragment} in {dest.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert page.is_file()
    assert broken_links(page) == []


def test_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    n = len(text.splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; at most {MAX_README_LINES} (move details into docs/)"
    for command in ("pip install -r requirements.txt", "python launch.py", "python -m pytest -q"):
        assert command in text, f"the README's command {command!r} is gone"
    assert "](assets/annotate.jpg)" in text


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README.read_text(encoding="utf-8"))}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert orphans == [], f"docs pages the README does not link to: {orphans}"


def test_slug_follows_github():
    assert slug(heading_text("Start-up time (official checkpoint, DeRIS-L size)")) == \
        "start-up-time-official-checkpoint-deris-l-size"
    assert slug(heading_text("The bundled model (`assets/bundled/`)")) == "the-bundled-model-assetsbundled"
    assert slug(heading_text("Teams beyond one machine: the store on PostgreSQL")) == \
        "teams-beyond-one-machine-the-store-on-postgresql"
    assert slug(heading_text("What sign-in protects, and what not")) == "what-sign-in-protects-and-what-not"
    assert slug(heading_text("Ablation (synthetic `val`)")) == "ablation-synthetic-val"
    assert slug(heading_text("**Bold** and `code_name` — Ärger")) == "bold-and-code_name--ärger"
    assert anchors("# A\n## A\n```\n# A\n```\n### A\n") == {"a", "a-1", "a-2"}


def test_the_checker_finds_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Title\n\n## Part two\n")
    (tmp_path / "a.png").write_bytes(b"")
    page = tmp_path / "README.md"
    page.write_text(
        "---\ntitle: [x](nowhere.md)\n---\n"  # front matter: not Markdown
        "[ok](docs/b.md#part-two) ![img](a.png) [web](https://example.org/x)\n"
        "[gone](docs/c.md) ![gone](b.png) [bad anchor](docs/b.md#part-three)\n"
        "`[in code](nothing.md)`\n```\n[in a block](nothing.md)\n```\n"
        "[self](#title-here)\n\n# Title here\n[ref]: docs/missing.md\n<img src=\"gone.jpg\">\n")
    found = broken_links(page, root=tmp_path)
    assert [f.split(": ", 1)[0] for f in found] == ["README.md:5", "README.md:5", "README.md:5", "README.md:13",
                                                    "README.md:14"]
    assert "docs/c.md: no such file" in found[0] and "b.png: no such file" in found[1]
    assert "no heading with the anchor #part-three" in found[2]
