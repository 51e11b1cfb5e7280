"""What is meant to be compiled compiles: every table of every plan that sbrrepro ships, as
`collect` renders it (no run done yet: every row not run, cited or counted), through pdflatex in one
document. The tables of a study with real results are compiled in test_end_to_end."""

from __future__ import annotations

from sbrrepro.plan import load_plan
from tests.helpers import REPO, compile_latex, require_tool, run_cli


def test_every_table_of_every_plan_compiles_with_pdflatex(tmp_path):
    require_tool("pdflatex")
    plans = sorted(str(p) for p in (REPO / "plans").glob("*/*.yaml") if p.name != "recipe.yaml")
    study = tmp_path / "study"
    made = run_cli("run", *plans, "--smoke", "--dry-run", "--study", str(study))
    assert made.returncode == 0, made.stderr[-3000:]
    collected = run_cli("collect", "--study", str(study))
    assert collected.returncode == 0, collected.stderr[-3000:]
    tables = sorted((study / "report").glob("*.tex"))
    assert len(tables) == sum(not load_plan(p).figure for p in plans) > 20
    result = compile_latex(tables, tmp_path / "latex")
    assert result.returncode == 0, result.stdout[-4000:]
    assert (tmp_path / "latex" / "doc.pdf").stat().st_size > 10_000
    log = (tmp_path / "latex" / "doc.log").read_text(errors="replace")
    assert "! " not in log and "Missing character" not in log
