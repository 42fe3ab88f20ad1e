"""The committed tables, figures and documents are current with the committed records.

A reader sees results/tables/, figures/ and the README on the front page without running anything, so a
record commit that forgets `make_tables.py --readme` or `make_figures.py` must fail here. Figures are
compared as a set of file names (PNG bytes vary with library versions); tables as text.
"""

import re

import make_figures
import make_tables
import pytest

from tests.conftest import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REGENERATE = "run `python scripts/make_tables.py --readme && python scripts/make_figures.py` and commit the result"


def test_committed_tables_equal_a_fresh_build(tmp_path):
    make_tables.build(ROOT / "results" / "runs", ROOT / "results" / "paper_reported.json", tmp_path)
    fresh = {p.name: p.read_text() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text() for p in (ROOT / "results" / "tables").iterdir() if p.is_file()}
    assert sorted(committed) == sorted(fresh), REGENERATE
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, f"stale tables {stale}: {REGENERATE}"


def test_committed_figures_are_the_set_the_records_give():
    figures = make_figures
    records = figures.read_records(ROOT / "results" / "runs")
    figures.WRITE = False
    out = ROOT / "figures"
    expected = {p.name for p in figures.all_figures(records, out)}
    committed = {p.name for p in out.glob("*.png")}
    assert committed == expected, f"missing {sorted(expected - committed)}, extra {sorted(committed - expected)}: " \
                                  f"{REGENERATE}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_documents_include_the_committed_tables_and_link_only_existing_files(document):
    text = document.read_text()
    for match in make_tables.INCLUDE.finditer(text):
        included = (document.parent / match["path"]).read_text().strip()
        assert included in match[0], f"{document.name}: the block of {match['path']} is stale: {REGENERATE}"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (document.parent / target).exists(), f"{document.name} links {target}, which does not exist"
