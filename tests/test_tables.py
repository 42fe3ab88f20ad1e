"""Golden test of the table builder on a small fixture set of records (values checked by hand:
increlora CoLA 40, 44 -> 42.00 ± 2.83; paired CoLA differences +5, +3 -> 4.00 ± 1.41, "holds";
the ad-hoc 7-step LoRA record is left out)."""

import subprocess
import sys

from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"


def test_tables_match_the_golden_files(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs", str(FIXTURES / "records"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("table1_minilm_cpu.md", "claims_minilm_cpu.md"):
        assert (tmp_path / name).read_text() == (FIXTURES / "expected" / name).read_text()
    assert sorted(p.name for p in tmp_path.glob("*.md")) == ["claims_minilm_cpu.md", "table1_minilm_cpu.md"]
