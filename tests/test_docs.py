"""README.md and docs/ stand alone: every link resolves inside the repository (anchors too), no
link leaves it but an https URL to a public source, nothing points at the team's shared folder;
the menu tree in docs/operating.md is the one the code draws; every docs page the code names
exists."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from firmware.ui import machine

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
INLINE = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HTML = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))  # code blocks hold no links
    text = re.sub(r"`[^`\n]*`", "", text)  # nor does inline code
    return [m for pattern in (INLINE, REFERENCE, HTML) for m in pattern.findall(text)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\*|_", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    found = links(page)
    assert found or page.name != "README.md", "the README links to its docs"
    for target in found:
        if target.startswith("https://"):
            continue  # a public source
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE), \
            f"{page.name}: {target} leaves the repository (only https links to public sources may)"
        path_part, _, anchor = target.partition("#")
        dest = page if not path_part else (page.parent / unquote(path_part)).resolve()
        assert dest.is_relative_to(REPO), f"{page.name}: {target} points outside the repository"
        assert dest.exists(), f"{page.name}: {target} does not exist"
        assert not dest.is_relative_to(REPO / ".venv") and ".git" not in dest.relative_to(REPO).parts
        if anchor:
            assert dest.suffix == ".md", f"{page.name}: {target}: an anchor into a file that is not markdown"
            assert unquote(anchor) in anchors(dest), \
                f"{page.name}: {target}: no heading makes #{anchor} (headings: {sorted(anchors(dest))})"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_points_at_the_teams_shared_folder(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"(\.\./|/work/)shared\b", text), f"{page.name} refers to the shared folder"


def test_the_link_checker_catches_what_it_must(tmp_path: Path) -> None:
    """The checks above on a page with each kind of broken link (so they cannot pass by
    finding no links at all)."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n[a](missing.md) ![b](img/x.png) [c](page.md#title) [d](#nope)\n"
                    "[e]: ../shared/cancel-semantics.md\n```\n[not a link](nowhere.md)\n```\n"
                    "<img src=\"pic.png\"> `[code](ignored.md)`\n", encoding="utf-8")
    assert links(page) == ["missing.md", "img/x.png", "page.md#title", "#nope",
                           "../shared/cancel-semantics.md", "pic.png"]
    assert anchors(page) == {"title"}
    assert slug("Deregistration (注销)") == "deregistration-注销"
    assert slug("Changing the host, TID or MID") == "changing-the-host-tid-or-mid"


def test_the_menu_tree_in_the_docs_is_the_one_the_code_draws() -> None:
    text = (REPO / "docs" / "operating.md").read_text(encoding="utf-8")
    tree = "\n".join(row.rstrip() for row in machine.menu_tree_text())
    assert f"```\n{tree}\n```" in text, "docs/operating.md: redraw the menu tree from " \
                                        "firmware.ui.machine.menu_tree_text()"


def test_every_docs_page_the_code_names_exists() -> None:
    named = set()
    for source in [p for top in ("firmware", "board", "drivers") for p in REPO.glob(f"{top}/**/*.py")]:
        named |= {(source, m) for m in re.findall(r"\bdocs/[\w-]+\.md\b", source.read_text(encoding="utf-8"))}
    assert named, "the code names its docs pages"
    missing = sorted(f"{s.relative_to(REPO)}: {m}" for s, m in named if not (REPO / m).exists())
    assert not missing, missing


def test_the_ecr_table_lists_every_op_with_its_fields() -> None:
    """docs/ecr.md's table against the protocol's table and the companions' ops: each op once,
    its required fields as `name`, its optional ones as *`name`* (words in brackets aside)."""
    from firmware.app.services.registry import ecr_ops
    from firmware.ecr.protocol import OPS

    code = {**OPS, **ecr_ops()}
    documented: dict[str, tuple[set[str], set[str]]] = {}
    for line in (REPO / "docs" / "ecr.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        fields = re.sub(r"\([^)]*\)", "", cells[1])  # (MMDD), (of the pre-auth), the reason's values
        optional = set(re.findall(r"\*`(\w+)`\*", fields))
        required = set(re.findall(r"`(\w+)`", re.sub(r"\*`\w+`\*", "", fields)))
        for op in re.findall(r"`(\w+)`", cells[0]):
            assert op not in documented, f"{op} twice"
            documented[op] = (required, optional)
    assert sorted(documented) == sorted(code), "docs/ecr.md and the code list different ops"
    for op, (required, optional) in code.items():
        assert documented[op] == (set(required), set(optional)), (op, documented[op], (required, optional))
