"""The documents a user reads: every relative link leads somewhere, and the README stays a short guide."""

import re
from pathlib import Path

import pytest

from tests.helpers.runs import REPO

DOCUMENTS = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *(REPO / "docs").glob("*.md"),
                    *(REPO / "benchmarks").rglob("*.md"), *(REPO / "examples").rglob("*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for line in markdown.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(document):
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)  # code blocks hold no links
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        where = (document.parent / path).resolve() if path else document
        assert where.exists(), f"{document.relative_to(REPO)}: {target} leads nowhere"
        if anchor:
            assert anchor in anchors(where), f"{document.relative_to(REPO)}: {target}: no such heading"


def test_the_readme_is_a_guide_of_at_most_250_lines_that_starts_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(first_block) == 2 and first_block[1] == "pip install -e '.[test]' && python -m pytest"
    ci = (REPO / ".ci" / "run").read_text()
    assert "python -m pytest" in ci  # CI runs the README's test command
