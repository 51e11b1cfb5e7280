"""Every published table of every paper (tables/<paper>/<name>.csv) is a plan: each covers every printed
row, all of them together dry-run (work shared across plans), and `sbrrepro params` reproduces SBR-CNN's
counted columns."""

from __future__ import annotations

import json

import pytest

from sbrrepro.plan import load_plan, load_published
from sbrrepro.zoo import MODELS
from tests.helpers import REPO, cli_json, plan_files

PLANS = plan_files()
SBR_CNN_PLANS = REPO / "plans" / "sbr-cnn"
PUBLISHED = sorted((REPO / "tables").glob("*/*.csv"))  # tables/<paper>/<table or figure>.csv


def test_every_published_table_has_a_plan_with_every_printed_row():
    """A published table has the plan of its name (tables/<paper>/table3.csv: <paper>/table3), on its
    numbers; a table plan has every row it prints, a figure plan draws rows of one."""
    plans = {plan.name: plan for plan in map(load_plan, PLANS)}
    assert PUBLISHED
    for csv in PUBLISHED:
        plan = plans.get(f"{csv.parent.name}/{csv.stem}")
        assert plan is not None and plan.published == load_published(csv, str(csv)), csv
    for plan in plans.values():
        numbers = sorted(r.number for r in plan.rows)
        assert set(numbers) <= set(plan.published) if plan.figure else numbers == sorted(plan.published), plan.path


@pytest.mark.slow
def test_all_plans_dry_run_together(cli, tmp_path):
    dry = cli_json("run", *map(str, PLANS), "--dry-run", "--study", str(tmp_path / "s"))
    listed = {(r["plan"], r["row"]) for r in dry}
    for path in PLANS:
        plan = load_plan(path)
        trained = {(plan.name, r.number) for r in plan.model_rows if MODELS[r.model].trains}
        assert trained <= listed, path
    text = cli("run", *map(str, PLANS), "--dry-run", "--study", str(tmp_path / "s")).stdout
    assert "9 row(s) need no job" in text  # SBR-CNN Table 1 (layers) and Fig. 1 (anchors): computed, not trained
    # the same Mask R-CNN, HTC, R^3-CNN and Faster R-CNN serve several tables
    summary = next(line for line in text.splitlines() if line.startswith("dry run:"))
    rows, trainings = (int(summary.split()[i]) for i in (2, 4))
    assert trainings < rows


def _params(plan: str) -> list[dict]:
    return next(iter(cli_json("params", str(SBR_CNN_PLANS / plan)).values()))


@pytest.mark.parametrize("plan", ["table1.yaml", "table2.yaml"])
@pytest.mark.training
def test_params_match_tables_1_and_2(plan):
    """Table 1 counts single layers (exactly); Table 2 whole models (within 1%)."""
    rows = _params(plan)
    assert rows and all(r["verdict"] == "✓" for r in rows), rows


@pytest.mark.parametrize("plan", ["table6.yaml", "table7.yaml"])
@pytest.mark.training
def test_params_of_tables_6_and_7_within_1_percent(plan):
    """Every printed # Params (rows 8 print none), Table 7 rows 3-7 included: the models built are
    those whose counts are the published ones (their notes give the arithmetic)."""
    rows = _params(plan)
    assert all(r["verdict"] == "✓" for r in rows if r["published"]["params_M"] is not None), rows
    assert [r["row"] for r in rows if r["published"]["params_M"] is None] == [8]


def test_counts_are_kept_by_model_and_options(tmp_path):
    """`collect` keeps counts in the study: a row counted once is read back, not built again."""
    from sbrrepro.params import Counts

    rows = load_plan(SBR_CNN_PLANS / "table1.yaml").rows
    kept = tmp_path / "params.json"
    first = Counts(kept)(rows[0])
    ((key, written),) = json.loads(kept.read_text()).items()
    assert written == first
    kept.write_text(json.dumps({key: 7}))  # what a later collect finds is what it reports
    assert Counts(kept)(rows[0]) == 7


@pytest.mark.training
def test_counted_tables_keep_their_verdict_at_smoke_scale_and_figures_render_no_table(cli, tmp_path):
    """Table 1 is counted on the paper-scale model, so even a smoke study compares it with the paper;
    Fig. 1 is a figure, which collect draws (on the embedded dataset), not a table."""
    study = str(tmp_path / "s")
    plans = [str(SBR_CNN_PLANS / p) for p in ("table1.yaml", "fig1.yaml")]
    assert cli("run", *plans, "--smoke", "--dry-run", "--study", study).returncode == 0
    text = cli("collect", "--study", study).stdout
    assert f"figure: {tmp_path / 's' / 'figures' / 'sbr-cnn-fig1.png'}" in text
    rows = cli_json("collect", "--study", study)
    assert [r["verdict"] for r in rows if r["plan"] == "sbr-cnn/table1"] == ["reproduced"] * 8
    assert sorted(p.name for p in (tmp_path / "s" / "report").iterdir()) == ["sbr-cnn-table1.md", "sbr-cnn-table1.tex"]


def _full_scale_configs(tmp_path) -> dict[tuple[str, int], tuple[object, dict]]:
    from sbrrepro.configs import build_config, full_scale

    scale = full_scale(tmp_path / "coco")
    return {(plan.name, row.number): (row, build_config(row, scale))
            for plan in map(load_plan, plan_files()) for row in plan.model_rows if MODELS[row.model].trains}


def _dicts(node, type_name: str) -> list[dict]:
    """Every dict of that type inside a config."""
    if isinstance(node, dict):
        return [node] * (node.get("type") == type_name) + [d for v in node.values() for d in _dicts(v, type_name)]
    return [d for v in node for d in _dicts(v, type_name)] if isinstance(node, list) else []


def test_the_full_scale_configs_are_the_authors(tmp_path):
    """GRoIE pools 2 points per bin (Tables 8-11); HTC averages every stage's mask; GC-Net on Mask
    R-CNN has no SyncBN (Table 11 row 5); the two-pair rows' box coders are their authors' configs'."""
    configs = _full_scale_configs(tmp_path)
    groie = [(k, d) for k, (_, cfg) in configs.items() for d in _dicts(cfg["model"], "GRoIE")]
    assert {k[0] for k, _ in groie if k[0].startswith("sbr-cnn/")} == {f"sbr-cnn/table{n}" for n in (8, 9, 10, 11)}
    assert all(d["roi_layer"]["sampling_ratio"] == 2 for _, d in groie)
    htc = [cfg for (row, cfg) in configs.values() if row.model == "htc"]
    assert htc and all(cfg["model"]["roi_head"]["type"] == "HTCMeanMaskRoIHead" for cfg in htc)
    assert not _dicts(configs["sbr-cnn/table11", 5][1]["model"], "SyncBN")
    assert all(_dicts(configs["sbr-cnn/table11", n][1]["model"], "SyncBN") for n in (6, 7))
    stds = {k: [h["bbox_coder"]["target_stds"] for h in cfg["model"]["roi_head"]["bbox_head"]]
            for k, (row, cfg) in configs.items() if row.model == "r3_cnn" and len(set(row.options["alternation"])) == 2}
    first, second = [0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1]
    assert stds.pop(("sbr-cnn/table6", 10)) == [first, first]
    assert stds and all(s == [first, second] for s in stds.values()), stds
