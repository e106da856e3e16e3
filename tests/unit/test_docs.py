"""The documentation stays true to itself and to the code: every relative link in README.md
and docs/*.md leads to a file (and heading) that exists, every setting of
:class:`~asgi_metrics.core.settings.Settings` has its row in docs/configuration.md, and every
``HTTP_METRICS_<NAME>`` the docs mention is a real environment variable."""

from __future__ import annotations

import dataclasses
import re
from functools import cache
from pathlib import Path

import pytest

from asgi_metrics.core.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
CONFIGURATION = DOCS / "configuration.md"

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) or [text](target "title"); images too (the "!" is not captured).
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_ENV_MENTION = re.compile(re.escape(ENV_PREFIX) + r"([A-Z][A-Z0-9_]*)")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out (a link or
    heading inside code is not one)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else _INLINE_CODE.sub("``", line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text in lower case, everything but
    letters, digits, spaces, ``-`` and ``_`` dropped, spaces turned into ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    """Every heading anchor of ``page``, with GitHub's ``-1``, ``-2`` for repeated ones."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match is None:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(found)


def relative_links(page: Path) -> list[tuple[int, str]]:
    """``(line number, target)`` of every link in ``page`` that is not a URL."""
    links = []
    for number, line in enumerate(_prose_lines(page.read_text(encoding="utf-8")), 1):
        for match in _LINK.finditer(line):
            target = match.group(1)
            if not _SCHEME.match(target):
                links.append((number, target))
    return links


def test_the_docs_exist() -> None:
    names = {page.name for page in PAGES}
    assert {
        "README.md", "configuration.md", "semantics.md", "routes.md",
        "correlation_and_tracing.md", "multiprocess.md", "security.md", "dashboards.md",
        "performance.md", "architecture.md",
    } <= names


def test_slugs_follow_github() -> None:
    assert github_slug("What `/metrics` reveals") == "what-metrics-reveals"
    assert github_slug("WSGI: an exception raised from the app call") == (
        "wsgi-an-exception-raised-from-the-app-call"
    )
    assert github_slug("Exemplars (`exemplars=True` by default)") == (
        "exemplars-exemplarstrue-by-default"
    )
    assert github_slug("`route_resolver`") == "route_resolver"
    assert github_slug("Many workers, many hosts") == "many-workers-many-hosts"


def test_the_link_check_sees_links() -> None:
    # Guards the checks below against a parser that silently finds nothing.
    readme_links = dict(relative_links(ROOT / "README.md")).values()
    assert "docs/configuration.md" in readme_links
    assert any("#" in target for page in PAGES for _, target in relative_links(page))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for number, target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{page.name}:{number}: {target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{page.name}:{number}: {target}: no heading #{anchor}")
        elif anchor and destination.suffix != ".md":
            broken.append(f"{page.name}:{number}: {target}: an anchor into a non-markdown file")
    assert not broken, "\n".join(broken)


def _first_cells(page: Path) -> set[str]:
    """The name in backticks that opens the first cell of each table row of ``page``."""
    names = set()
    for line in _lines_outside_fences(page):
        if not line.lstrip().startswith("|"):
            continue
        first = line.strip().strip("|").split("|")[0].strip()
        match = re.match(r"`([^`]+)`", first)
        if match:
            names.add(match.group(1))
    return names


def _lines_outside_fences(page: Path) -> list[str]:
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def test_every_setting_has_a_row_in_configuration() -> None:
    rows = _first_cells(CONFIGURATION)
    expected = [field.name for field in dataclasses.fields(Settings)] + ["route_resolver"]
    missing = [name for name in expected if name not in rows]
    assert not missing, f"docs/configuration.md has no table row for: {missing}"


def test_every_environment_variable_mentioned_is_a_setting() -> None:
    with_env = {
        field.name for field in dataclasses.fields(Settings) if field.metadata["env"] is not None
    }
    wrong = sorted(
        f"{page.name}: {ENV_PREFIX}{name}"
        for page in PAGES
        for name in _ENV_MENTION.findall(page.read_text(encoding="utf-8"))
        if name.lower() not in with_env
    )
    assert not wrong, f"not a setting with an environment variable: {wrong}"
