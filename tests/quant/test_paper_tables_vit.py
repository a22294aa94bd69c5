"""The digits-ViT paper table (``quant.paper_tables_vit``): its W8A8 goal and the
exact-mode count on the integer network, over the table's three calibration seeds, and the
committed ``docs/paper-tables/vit.md`` cells equal what is computed here."""

import pathlib
import re

import pytest
from qaccel.quant import paper_tables_vit as pv
from qaccel.quant.paper_tables import Ctx, Settings

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "paper-tables" / "vit.md"


@pytest.fixture(scope="module")
def ctx():
    return Ctx(Settings())


def _committed(label: str) -> str:
    row = next(line for line in DOC.read_text().splitlines()
               if line.startswith(f"| {label} |"))
    return row.split(" | ")[1]


def test_w8a8_goal_exactness_and_committed_cell(ctx):
    label, cfg, a16 = pv.ROWS[0]
    fp = ctx.model(pv.MODEL)[3]
    c, recs = pv.cell(ctx, cfg, a16)
    # within 0.5 points of FP32 on every seed, with a margin above the seed spread
    assert c.acc - (fp - 0.5) > c.spread("acc")
    assert min(c.accs) >= fp - 0.5
    assert all(r["diffs"] == 0 and r["outputs"] == 5390 for r in recs)
    assert c.shown_by(_committed(label), acc_tol=0.19, sqnr_tol=0.1)


def test_committed_table_states_its_goals_and_zero_diffs():
    text = DOC.read_text()
    settings = re.search(r"settings: (Settings\(.*?\))\)", text).group(1)
    assert settings == str(Settings())                   # generated at the tests' settings
    for label, _, _ in pv.ROWS:
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert row.rstrip(" |").endswith("0 of 16170"), row     # 3 seeds x 539 x 10
    assert "| W8A8 integer network within 0.5 points of FP32 | yes |" in text
    assert "| W4A8 AdaRound integer network within 1.5 points of FP32 | yes |" in text
