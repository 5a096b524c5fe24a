"""README.md stays a five-minute read, and every relative link in it resolves.

MkDocs checks the links of the pages under docs/ (mkdocs.yml, strict, run by .ci/run); README.md is
outside its docs_dir, so this test checks README's links itself: every relative link must name an
existing file of the repository and, with `#anchor`, a heading of that file (GitHub's anchor rule).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 300

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\S\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def _prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code spans (links there are not links)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", markdown))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, each space a hyphen."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown document, with GitHub's -1, -2 suffixes for repeats."""
    found: set[str] = set()
    for match in _HEADING.finditer(_FENCE.sub("", markdown)):
        base = github_anchor(match.group(2))
        anchor, n = base, 0
        while anchor in found:
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


def broken_links(markdown: str, base: Path) -> list[str]:
    """Each relative link of `markdown` (a file in folder `base`) that names no file or no heading.

    Returns one line per broken link, saying what is missing; external links (a scheme such as https:)
    are not followed.
    """
    problems: list[str] = []
    prose = _prose(markdown)
    targets = [m.group(1) for m in _LINK.finditer(prose)] + [m.group(1) for m in _REFERENCE.finditer(prose)]
    for target in targets:
        if _EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path = (base / path_part).resolve() if path_part else None
        if path is not None and not path.exists():
            problems.append(f"{target}: no file {path_part}")
            continue
        if not anchor:
            continue
        text = path.read_text(encoding="utf-8") if path is not None else markdown
        if path is not None and path.suffix != ".md":
            problems.append(f"{target}: #{anchor} points into a file that is not Markdown")
        elif anchor not in anchors(text):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    return problems


def test_readme_is_a_five_minute_read():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < MAX_README_LINES, f"README.md has {lines} lines; move detail to a page under docs/"


def test_every_relative_link_in_the_readme_resolves():
    assert broken_links(README.read_text(encoding="utf-8"), ROOT) == []


def test_every_docs_page_is_reachable_from_the_readme_map():
    """The README's documentation map links every page under docs/ (MkDocs checks the pages' own links)."""
    readme = _prose(README.read_text(encoding="utf-8"))
    linked = {m.group(1).partition("#")[0] for m in _LINK.finditer(readme)}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert sorted(pages - linked) == []


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("See [the guide](docs/no-such-page.md).", ["docs/no-such-page.md: no file docs/no-such-page.md"]),
        ("See [it](docs/page.md#no-such-heading).", ["docs/page.md#no-such-heading: no heading with anchor"]),
        ("Jump to [there](#nowhere).", ["#nowhere: no heading with anchor"]),
        ("[ref]: docs/missing.md", ["docs/missing.md: no file docs/missing.md"]),
    ],
)
def test_a_broken_link_is_reported(tmp_path, snippet, expected):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## A section: `code` here\n", encoding="utf-8")
    problems = broken_links(f"# Title\n\n{snippet}\n", tmp_path)
    assert len(problems) == 1 and problems[0].startswith(expected[0]), problems


def test_good_links_code_and_external_links_are_not_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## A section: `code` here\n", encoding="utf-8")
    snippet = (
        "# Title\n\n## Two commands\n\n"
        "[page](docs/page.md), [section](docs/page.md#a-section-code-here), [here](#two-commands), "
        "[web](https://example.org/missing.md), `[not a link](nowhere.md)`\n\n"
        "```markdown\n[also not a link](nowhere.md)\n```\n"
    )
    assert broken_links(snippet, tmp_path) == []
