"""Every relative link in README.md, docs/*.md and the results/*/FINDINGS.md they link to points
to a file that exists, and every #anchor to a heading of the target page (GitHub's slugs)."""
import re
from pathlib import Path

import pytest

from conftest import ROOT

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text: str):
    """The lines outside fenced code blocks, with inline code spans removed."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield re.sub(r"`+[^`]*`+", "", line), line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the text without markup, lower case, punctuation other than
    - and _ removed, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[*~]|(?<!\w)_|_(?!\w)", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set:
    seen, out = {}, set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path):
    for stripped, _ in prose_lines(path.read_text(encoding="utf-8")):
        for m in LINK.finditer(stripped):
            target = m.group(1)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto: ...
                yield target


def pages():
    """README.md, docs/*.md, and every results/**.md reachable from them by links."""
    todo = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    done = []
    while todo:
        page = todo.pop(0)
        if page in done:
            continue
        done.append(page)
        for target in links(page):
            path = (page.parent / target.split("#")[0]).resolve()
            if path.suffix == ".md" and path.is_file() and (ROOT / "results") in path.parents:
                todo.append(path)
    return done


PAGES = pages()


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_links_point_to_files_and_headings(page):
    broken = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached or not page.is_file() or page.suffix != ".md":
            continue
        reached.add(page)
        todo += [(page.parent / t.split("#")[0]).resolve() for t in links(page) if t.split("#")[0]]
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p not in reached]
    assert not missing, f"docs pages no link leads to from README.md: {missing}"


def test_slugs_follow_github():
    assert slug("Using a cluster's own MPI") == "using-a-clusters-own-mpi"
    assert slug("What is guaranteed: invariance and exactness") == \
        "what-is-guaranteed-invariance-and-exactness"
    assert slug("`--mpi=pmi2` or `--mpi=pmix`") == "--mpipmi2-or---mpipmix"
    assert slug("Comparing runs: `report`") == "comparing-runs-report"
    assert slug("system.client_group_size") == "systemclient_group_size"
