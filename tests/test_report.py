"""The pure pieces and `collect` on crafted results: metric conversion, judgements, every verdict
(several seeds, a missing run, a failed one, a cited row, a setup other than the paper's), and every
cell that the four renderers of the one table model draw."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sbrrepro import jobs
from sbrrepro.collect import plan_results, table_of
from sbrrepro.config_files import write_configs
from sbrrepro.configs import full_scale
from sbrrepro.metrics import from_coco
from sbrrepro.params import Counts
from sbrrepro.plan import load_plan
from sbrrepro.render import tex, to_html, to_latex, to_markdown, to_terminal
from sbrrepro.study import Study
from sbrrepro.table import BEST, SECOND
from sbrrepro.verdicts import (
    CITED,
    COUNTED,
    FAILED,
    NOT_REPRODUCED,
    NOT_RUN,
    OTHER_DATA,
    OTHER_SETUP,
    OWN,
    REPRODUCED,
    RUNNING,
    SMOKE,
    VERDICTS,
    Judged,
    verdict,
)
from sbrrepro.verify import MATCH, MISMATCH, MISSING, UNJUDGED, compare

REPO = Path(__file__).resolve().parents[1]


def test_coco_fractions_become_the_papers_percent():
    got = from_coco({"coco/bbox_mAP": 0.4089, "coco/segm_mAP": 0.372, "coco/bbox_mAP_s": -1.0})
    assert got == {"bbox_AP": 40.9, "segm_AP": 37.2}  # -1 (no small objects) is not a number to show


def test_judgements_use_the_tolerance_and_the_seeds_mean():
    published = {"bbox_AP": "40.9", "segm_AP": "37.2"}
    cells, judged = compare({"bbox_AP": 41.3, "segm_AP": 36.8}, published, ["bbox_AP", "segm_AP"], 0.5)
    assert judged == MATCH
    assert cells["bbox_AP"].diff == 0.4 and cells["segm_AP"].diff == -0.4
    assert compare({"bbox_AP": 41.5, "segm_AP": 37.2}, published, ["bbox_AP", "segm_AP"], 0.5)[1] == MISMATCH
    assert compare({"bbox_AP": 40.9}, published, ["bbox_AP", "segm_AP"], 0.5)[1] == MISSING
    assert compare({"bbox_AP": 40.9}, {"bbox_AP": ""}, ["bbox_AP"], 0.5)[1] == UNJUDGED
    # three seeds, one far off: the mean (41.0) is judged, not each seed
    cells, judged = compare([{"bbox_AP": 40.0}, {"bbox_AP": 41.0}, {"bbox_AP": 42.0}], {"bbox_AP": "40.9"},
                            ["bbox_AP"], 0.5)
    assert judged == MATCH and (cells["bbox_AP"].ours, cells["bbox_AP"].std, cells["bbox_AP"].seeds) == (41.0, 1.0, 3)


@pytest.mark.parametrize(("judged", "expected"), [
    (Judged("cited", (), UNJUDGED, True), CITED),
    (Judged("trained", ("done", "failed"), MATCH, True), FAILED),
    (Judged("trained", ("done", "running"), MATCH, True), RUNNING),
    (Judged("trained", ("awaiting server",), MATCH, True), RUNNING),
    (Judged("trained", ("new",), MISSING, True), NOT_RUN),
    (Judged("trained", ("cancelled",), MISSING, True), NOT_RUN),
    (Judged("trained", ("done",), MATCH, True), REPRODUCED),
    (Judged("trained", ("done",), MISMATCH, True), NOT_REPRODUCED),
    (Judged("trained", ("done",), MISSING, True), NOT_REPRODUCED),  # nothing detected
    (Judged("trained", ("done",), MATCH, True, ("batch",)), OTHER_SETUP),
    (Judged("trained", ("done",), MISMATCH, True, ("schedule",)), NOT_REPRODUCED),
    (Judged("trained", ("done",), MATCH, True, ("schedule", "smoke")), SMOKE),
    (Judged("trained", ("done",), MATCH, True, ("dataset",)), OTHER_DATA),
    (Judged("counted", (), MATCH, True, ("smoke",), scale_free=True), REPRODUCED),
    (Judged("counted", (), UNJUDGED, True), COUNTED),
    (Judged("trained", ("done",), MATCH, False), OWN),
    (Judged("derived", ("done", "done"), MATCH, True), REPRODUCED),
    (Judged("derived", ("done", "new"), MISSING, True), NOT_RUN),
])
def test_every_verdict(judged, expected):
    assert verdict(judged) == expected


def test_verdicts_are_a_symbol_and_a_word_each_its_own():
    assert len({v.symbol for v in VERDICTS}) == len({v.word for v in VERDICTS}) == len(VERDICTS)


# ---- collect on crafted results ------------------------------------------------------------------
PLAN = """
paper: crafted
table: "1"
title: Crafted results
metrics: [bbox_AP, segm_AP]
tolerance: 0.5
published: published.csv
recipe_file: {recipe}
rows:
  - {{row: 1, model: mask_rcnn, seeds: [0, 1, 2]}}
  - {{row: 2, model: mask_rcnn, options: {{addon: gcnet}}}}
  - {{row: 3, model: r3_cnn, options: {{loops: 2}}}}
  - {{row: 4, model: r3_cnn, options: {{loops: 3}}}}
  - {{row: 5, cited: "Other et al. 2020"}}
  - {{row: 6, model: r3_cnn, options: {{loops: 4}}}}
  - {{row: 7, model: mask_rcnn, recipe: {{epochs: 24, lr_steps: [16, 22]}}}}
  - {{row: 8, derived: [1, 2]}}
"""
PUBLISHED = """row,method,bbox_AP,segm_AP
1,Mask,38.2,34.7
2,Naive,38.0,35.0
3,R2,40.4,36.7
4,R3,40.9,37.2
5,Other,41.0,37.0
6,R4,40.9,37.4
7,Mask 2x,39.0,35.5
8,Improvement,0.2,-0.3
"""


def _finish(study: Study, key: str, bbox: float, segm: float, lr_scaled: bool = False, epochs: int = 12) -> None:
    """What a finished training leaves: MMEngine's scalars, the job's provenance and done.json."""
    run = study.paths.run(key)
    log = run.root / "20260101_000000" / "vis_data" / "scalars.json"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"loss": 1.0, "epoch": epochs, "iter": 1, "step": 1}) + "\n" +
                   json.dumps({"coco/bbox_mAP": bbox, "coco/segm_mAP": segm, "step": epochs}) + "\n")
    run.provenance.write_text(json.dumps({
        "lr_scaled": lr_scaled, "started": time.time() - 3600, "processes": 8, "gpus": 8, "device": "Tesla V100",
        "batch": 32 if lr_scaled else 16, "lr_effective": 0.04 if lr_scaled else 0.02, "seed": 0,
        "versions": {"mmdet": "3.3.0", "mmcv": "2.1.0", "mmengine": "0.10.7", "torch": "2.13.0"},
        "sbrrepro_commit": "abc1234"}))
    run.done.write_text(json.dumps({"epochs": epochs, "finished": time.time()}))


@pytest.fixture
def crafted(tmp_path):
    recipe = REPO / "plans" / "sbr-cnn" / "recipe.yaml"
    (tmp_path / "plan.yaml").write_text(PLAN.format(recipe=recipe))
    (tmp_path / "published.csv").write_text(PUBLISHED)
    plan = load_plan(tmp_path / "plan.yaml")
    study = Study.open(tmp_path / "study", "full", create=True)
    written = write_configs(plan, full_scale(tmp_path / "coco"), study.paths)
    study.register((plan.path, written))
    by_row = {}
    for rc in written:
        by_row.setdefault(rc.row, []).append(rc)
    # row 1, three seeds: 38.0, 38.2, 38.4 -> 38.2 ± 0.2 (within 0.5 of 38.2 / 34.7)
    for rc, (b, s) in zip(by_row[1], [(0.380, 0.345), (0.382, 0.347), (0.384, 0.349)]):
        _finish(study, rc.key, b, s)
    _finish(study, by_row[2][0].key, 0.370, 0.350)  # bbox 1.0 below the paper's: not reproduced
    _finish(study, by_row[6][0].key, 0.410, 0.373, lr_scaled=True)  # within, on another total batch
    _finish(study, by_row[7][0].key, 0.391, 0.355, epochs=6)  # within, but half the schedule
    states = {s.key: s for s in jobs.states(study, written)}
    state_of = {}
    for rc in written:
        s = states[rc.key]
        if rc.row == 3:
            s = jobs.RowState(**{**s.to_json(), "state": "failed"})  # as the executor reports a failed job
        elif rc.row == 4:
            s = jobs.RowState(**{**s.to_json(), "state": "running"})
        state_of[(rc.plan, rc.row, rc.seed)] = s
    results = plan_results(study, plan, by_row, state_of, Counts(study.paths.params))
    return plan, study, results


def test_collect_gives_every_verdict_from_crafted_results(crafted):
    plan, _, results = crafted
    got = {r.row.number: r.verdict for r in results}
    assert got == {1: REPRODUCED, 2: NOT_REPRODUCED, 3: FAILED, 4: RUNNING, 5: CITED, 6: OTHER_SETUP,
                   7: OTHER_SETUP, 8: NOT_REPRODUCED}
    one = results[0].table_row
    assert one.seeds == 3 and one.cells["bbox_AP"].ours == 38.2 and one.cells["bbox_AP"].std == 0.2
    assert [run.state.seed for run in results[0].runs] == [0, 1, 2]
    assert len({run.state.key for run in results[0].runs}) == 3, "each seed is a training of its own"
    assert results[5].table_row.marks == ("batch",) and results[6].table_row.marks == ("schedule",)
    derived = results[7].table_row.cells  # row 1 - row 2, ours from ours: 38.2 - 37.0, 34.7 - 35.0
    assert (derived["bbox_AP"].ours, derived["segm_AP"].ours) == (1.2, -0.3)
    cited = results[4].table_row.cells["bbox_AP"]
    assert cited.published == 41.0 and cited.ours is None


def _rows(text: str) -> dict[str, list[str]]:
    return {cells[0]: cells for line in text.splitlines()
            if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])[0].isdigit()}


def test_every_rendered_cell_of_the_crafted_table(crafted):
    plan, _, results = crafted
    table = table_of(plan, results, "full", "coco2017")
    md = _rows(to_markdown(table))
    assert md["1"] == ["1", "Mask", "38.2", "38.2 ± 0.2", "+0.0", "34.7", "34.7 ± 0.2", "+0.0",
                       "✓ reproduced (3 seeds)"]
    assert md["2"] == ["2", "Naive", "38.0", "37.0", "-1.0", "35.0", "35.0", "+0.0", "✗ not reproduced"]
    assert md["3"] == ["3", "R2", "40.4", "–", "–", "36.7", "–", "–", "! failed"]
    assert md["4"] == ["4", "R3", "40.9", "–", "–", "37.2", "–", "–", "… running"]
    assert md["5"] == ["5", "Other", "41.0", "–", "–", "37.0", "–", "–", "» cited"]
    # best (bold) and second best (underlined) of our columns: derived and cited lines take no part
    assert md["6"] == ["6", "R4", "40.9", "**41.0**", "+0.1", "37.4", "**37.3**", "-0.1",
                       "≈ within tolerance, other setup†"]
    assert md["7"] == ["7", "Mask 2x", "39.0", "<u>39.1</u>", "+0.1", "35.5", "<u>35.5</u>", "+0.0",
                       "≈ within tolerance, other setup‡"]
    assert md["8"] == ["8", "Improvement", "0.2", "1.2", "+1.0", "-0.3", "-0.3", "+0.0", "✗ not reproduced"]
    assert table.ranks[(5, "bbox_AP")] == BEST and table.ranks[(6, "bbox_AP")] == SECOND
    text = to_markdown(table)
    assert "† trained on another number of GPUs or with another total batch" in text
    assert "‡ trained for another number of epochs" in text
    assert "Row 5: cited (Other et al. 2020)" in text and "Row 8: row 1 − row 2" in text

    html = to_html(table)
    assert html.count("<tr class=") == 8 and "<b>41.0</b>" in html and "<u>39.1</u>" in html
    assert "38.2 ± 0.2" in html and "✓ reproduced (3 seeds)" in html and 'class="v-failed"' in html

    latex = to_latex(table)
    assert r"\textbf{41.0}" in latex and r"\underline{39.1}" in latex
    assert r"38.2 $\pm$ 0.2" in latex and r"\checkmark{} reproduced (3 seeds)" in latex
    assert "within tolerance, other setup$^\\dagger$" in latex
    assert not any(ord(c) > 127 for c in latex), "plain ASCII, for pdflatex without unicode packages"

    term = to_terminal(table).splitlines()
    assert term[1].split()[:3] == ["#", "method", "B_AP"]
    assert term[2].split() == ["1", "Mask", "38.2", "38.2", "±", "0.2", "+0.0", "34.7", "34.7", "±", "0.2", "+0.0",
                               "✓", "reproduced", "(3", "seeds)"]


def test_the_terminal_table_fits_its_width_and_styles_only_when_asked(crafted):
    plan, _, results = crafted
    table = table_of(plan, results, "full", "coco2017")
    narrow = to_terminal(table, width=70)
    body = [line for line in narrow.splitlines() if line[:1].isdigit() or line.startswith("#")]
    assert all(len(line) <= 70 for line in body), body
    assert sum(line.startswith("#") for line in body) == 3, "blocks under the lead columns: B_AP, S_AP, Verdict"
    assert "\033[" not in narrow
    styled = to_terminal(table, styled=True)
    assert "\033[1m41.0\033[0m" in styled and "\033[4m39.1\033[0m" in styled


def test_paper_column_groups_in_latex_and_html(crafted):
    """Table 11's layout: the bounding box and mask groups over their APs."""
    plan = load_plan(REPO / "plans" / "sbr-cnn" / "table11.yaml")
    table = table_of(plan, [], "full", "coco2017")
    assert [(g, len(ms)) for g, ms in table.groups] == [("Bounding box", 6), ("Mask", 6)]
    latex = to_latex(table)  # twelve metrics: each row on two lines, the paper's then ours (Δ)
    assert r"\multicolumn{6}{c}{Bounding box} & \multicolumn{6}{c}{Mask}" in latex
    assert r"\multicolumn{1}{c}{AP50}" in latex and latex.count(r"\cmidrule") == 2
    html = to_html(table)
    assert '<th colspan="6" class="group">Bounding box</th>' in html and '<th colspan="1">APs</th>' in html


def test_a_wide_table_stacks_the_papers_numbers_over_ours_in_latex_and_html():
    from sbrrepro.table import Table, TableRow
    from sbrrepro.verify import Cell

    metrics = ["bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl", "segm_AP"]
    row = TableRow(["1", "Mask"], {m: Cell(40.0, 40.2 + i, None) for i, m in enumerate(metrics)}, REPRODUCED)
    other = TableRow(["2", "HTC"], {m: Cell(41.0, None) for m in metrics}, NOT_RUN)
    latex = to_latex(Table("t", "c", ["#", "method"], metrics, [row, other], "coco2017"))
    assert r"1 & Mask & Paper & 40.0 & 40.0 & 40.0 & 40.0 & 40.0 & 40.0 & 40.0 &  \\" in latex
    assert (r" &  & Ours & 40.2 (+0.2) & 41.2 (+1.2) & 42.2 (+2.2) & 43.2 (+3.2) & 44.2 (+4.2) & 45.2 (+5.2) & "
            r"46.2 (+6.2) & \checkmark{} reproduced \\[2pt]") in latex, "one value per column: nothing to rank"
    assert r" &  & Ours & -- & -- & -- & -- & -- & -- & -- & $\circ$ not run \\[2pt]" in latex
    page = to_html(Table("t", "c", ["#", "method"], metrics, [row, other], "coco2017"))  # the same two lines per row
    assert ('<td class="lead" rowspan="2">Mask</td><td class="lead">Paper</td><td class="num">40.0</td>' in page
            and '<td class="verdict" rowspan="2">✓ reproduced</td></tr>' in page)
    assert '<tr class="v-reproduced ours"><td class="lead">Ours</td><td class="num">40.2 (+0.2)</td>' in page


def test_results_export_one_line_per_row_and_seed(crafted):
    from sbrrepro.export import write_rows

    _, study, results = crafted
    write_rows(results, study.paths)
    for frame in (pd.read_csv(study.paths.results_csv), pd.read_parquet(study.paths.results_parquet)):
        assert len(frame) == 3 + 7  # row 1 has three seeds
        first = frame[frame["row"] == 1]
        assert list(first["seed"]) == [0, 1, 2] and list(first["ours_bbox_AP"]) == [38.0, 38.2, 38.4]
        assert set(first["verdict"]) == {"reproduced"}
        assert frame[frame["row"] == 5]["verdict"].item() == "cited"


def test_tex_escapes_once():
    assert tex("R^3-CNN 50% & ±") == r"R$^{3}$-CNN 50\% \& $\pm$"
    assert re.fullmatch(r"[ -~]*", tex("ümlaut ✓ ≈ ‡ § ¶ …"))


def _in_terminal(args: list[str], columns: int) -> str:
    """What a command prints to a real terminal (a pseudo-terminal `columns` wide)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "sbrrepro", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=REPO, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the command has ended and closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0, out.decode(errors="replace")[-3000:]
    return out.decode().replace("\r\n", "\n")


def test_collect_and_status_fit_a_terminal_and_stay_plain_in_a_pipe(crafted, cli):
    _, study, _ = crafted
    shown = _in_terminal(["collect", "--study", str(study.root)], 70)
    assert "\033[1m41.0\033[0m" in shown, "best of our column in bold"
    table = shown.split("\n\n")[0].splitlines()
    assert all(len(re.sub(r"\033\[\d+m", "", line)) <= 70 for line in table if line[:1] in "#12345678"), table
    piped = cli("collect", "--study", str(study.root)).stdout
    assert "\033[" not in piped and max(map(len, piped.splitlines())) > 70, "a pipe gets the whole width, plain"
    status = _in_terminal(["status", "--study", str(study.root)], 60).splitlines()
    assert all(len(line) <= 60 for line in status[:-1]), status  # the last: a command to copy, whole
    assert status[-2] == "rows done: 4 of 6 (runs: 6 of 8) · new: 2"  # row 1: three seeds, three runs
    assert status[-1] == f"watch the curves: tensorboard --logdir {study.root / 'runs'}"


def test_progress_names_the_epoch_each_running_training_reached(tmp_path):
    from sbrrepro.layout import RunPaths
    from sbrrepro.progress import epoch, summary

    run = RunPaths(tmp_path / "run")
    log = run.root / "20260101_000000" / "vis_data" / "scalars.json"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps({"loss": 2.0, "epoch": e, "iter": 1, "step": e}) + "\n" for e in (1, 2, 3)))
    config = tmp_path / "row.py"
    config.write_text("train_cfg = {'type': 'EpochBasedTrainLoop', 'max_epochs': 12, 'val_interval': 1}\n")
    assert epoch(run, config) == "epoch 3/12"
    states = [jobs.RowState("p", n, "x", str(config), f"k{n}", "h", f"k{n}", False, s)
              for n, s in ((1, "done"), (2, "running"), (3, "pending"), (4, "failed"))]
    assert summary(states, {"k2": "epoch 3/12"}) == "rows done: 1 of 4 · failed: 1 · pending: 1 · running: 1 · " \
                                                   "row 2 epoch 3/12"


def test_the_report_page_of_crafted_results_with_a_real_failed_job(crafted, cli):
    """Row 3 really fails (its COCO is missing): the page shows its log's end, beside the summary,
    the setups, the config changes against the baseline row and the cited row."""
    from conftest import settle

    from sbrrepro.cluster import FAILED as JOB_FAILED
    from sbrrepro.cluster.local import LocalExecutor

    _, study, _ = crafted
    (rc,) = [rc for _, rc in study.rows() if rc.row == 3]
    executor = LocalExecutor()
    (submitted,) = jobs.submit(study, [rc], executor)
    sub = study.submissions()[submitted]
    assert settle(executor, sub.job_id, sub.folder, timeout=300) == JOB_FAILED
    result = cli("report", "--study", str(study.root))
    assert result.returncode == 0, result.stderr[-3000:]
    page = (study.root / "report" / "site" / "crafted.html").read_text()
    md = (study.root / "report" / "site" / "crafted.md").read_text()
    for text in (page, md):
        assert "Rows reproduced: 1 of 5 run (5 judged against the paper; 8 rows in all; full scale on coco2017)" in text
        assert "reproduced: 1, not reproduced: 2, within tolerance, other setup: 2, not run: 1, failed: 1, cited: 1" \
            in text
        assert "crafted/table1 row 3: R2 (seed 0)" in text and "FileNotFoundError" in text  # the log's end
        assert "Other et al. 2020" in text
        assert "3 (0, 1, 2) / 1" in text and "8 (Tesla V100, 8 processes) / 8" in text and "0.04 / 0.02" in text
        assert "mmdet 3.3.0, mmcv 2.1.0" in text and "abc1234" in text
    assert "<details><summary>crafted/table1 row 2: Naive against row 1: " in page
    assert "- **crafted/table1 row 2: Naive** against row 1: \n  - `model.backbone.plugins.0.cfg.type`: (absent) → " \
           "\"ContextBlock\"" in md


# ---- the report page's summary, its figures' captions, the smoke footnote ------------------------
FIGURE = """
paper: crafted
table: fig2
title: IoU distribution of the positive training RoIs
metrics: []
figure: iou_histograms
recipe_file: {recipe}
rows:
  - {{row: 1, model: mask_rcnn, recipe: {{epochs: 36, lr_steps: [28, 34]}}}}
"""


@pytest.fixture
def with_figure(crafted, tmp_path):
    """The crafted study with every table row's training finished, and a figure plan whose one row
    is a training of its own (Mask R-CNN 3x, as SBR-CNN's Fig. 3), its IoU histograms recorded."""
    _, study, _ = crafted
    for _, rc in study.rows():
        if rc.row in (3, 4):  # failed and running in `crafted`'s states, new in its folders
            _finish(study, rc.key, 0.404, 0.367)
    (tmp_path / "fig2.yaml").write_text(FIGURE.format(recipe=REPO / "plans" / "sbr-cnn" / "recipe.yaml"))
    figure = load_plan(tmp_path / "fig2.yaml")
    (rc,) = write_configs(figure, full_scale(tmp_path / "coco"), study.paths)
    study.register((figure.path, [rc]))
    run = study.paths.run(rc.key)
    run.root.mkdir(parents=True)
    edges = {"proposals": [i / 20 for i in range(21)], "positives": [0.5 + i / 20 for i in range(11)]}
    run.histograms.write_text(json.dumps({p: {"bin_edges": e, "epochs": {"1": {"rcnn": list(range(len(e) - 1))}}}
                                          for p, e in edges.items()}))  # as IoUHistogramHook writes them
    return study, rc


@pytest.fixture(params=["done", "running", "failed"])
def figure_training(request, with_figure):
    """The figure row's training in each state, as `status` finds it: finished, or a recorded local
    job whose controller still runs (its training holding a slot), or ended without a result."""
    study, rc = with_figure
    run, alive = study.paths.run(rc.key), None
    if request.param == "done":
        _finish(study, rc.key, 0.392, 0.356, epochs=36)
    else:
        run.submitit.mkdir()
        if request.param == "running":
            alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(run.submitit)])
            run.started.touch()
            job_id = str(alive.pid)
        else:
            ended = subprocess.Popen(["true"])
            ended.wait()
            job_id = str(ended.pid)
            (run.submitit / f"{job_id}_0_log.err").write_text("RuntimeError: CUDA out of memory\n")
        (run.submitit / f"{job_id}{jobs.SUBMITTED}").touch()
        study.record("local", [(rc.key, str(rc.path), job_id, run.submitit)])
    yield study, request.param
    if alive is not None:
        alive.kill()
        alive.wait()


def test_the_report_summary_counts_every_training_as_status_shows_it(figure_training):
    """Hours spent and still to spend count every training of the paper's plans, the figure plan's
    included, by its state: a study whose every row is done has nothing left to spend; a running
    or a failed training is still to spend (`run --retry-failed` trains a failed one again)."""
    from sbrrepro.collect import collect
    from sbrrepro.report import page, to_html_page, to_markdown_page

    study, state = figure_training
    p = page(study, collect(study), "crafted")
    states = {s.state for s in jobs.states(study, [rc for _, rc in study.rows()])}
    summary = p.summary
    if state == "done":
        assert states == {"done"}, "`status` shows every row done"
        assert (summary["trainings_to_run"], summary["to_spend"]) == (0, 0)
        assert summary["not_finished"] == {}
        assert summary["spent"] == pytest.approx(9 * 8, abs=0.1)  # 9 trainings of 1 h on 8 processes each
        assert p.unfinished == []
        line = "GPU-hours spent: 72.00; still to spend: 0.00 (0 training(s) not finished)."
    else:
        assert states == {"done", state}
        assert (summary["trainings_to_run"], summary["to_spend"]) == (1, 280.0)
        assert summary["not_finished"] == {state: 1}
        assert summary["spent"] == pytest.approx(8 * 8, abs=0.1)  # Mask R-CNN 3x: 35 h on 8 V100s, still to spend
        line = f"GPU-hours spent: 64.00; still to spend: 280.00 (1 training(s) not finished: 1 {state})."
        (name, shown, log), = p.unfinished
        assert (name, shown) == ("crafted/fig2 row 1: mask_rcnn (seed 0)", state)
        assert (log or "").endswith("CUDA out of memory") == (state == "failed")
    if state == "failed":
        line += " A failed training is still to spend: `sbrrepro run --retry-failed` trains it again."
    for text in (to_html_page(p), to_markdown_page(p, study.paths.site)):
        assert line in text


def test_a_figures_caption_names_the_population_it_draws(with_figure, tmp_path, monkeypatch):
    """Fig. 2 (as SBR-CNN's Fig. 3) draws every proposal at the assigner by default: its title and its
    caption on the report page say so, not the plan's "positive training RoIs"; `plot-iou
    --population positives` titles its figure after the positives."""
    from sbrrepro.collect import collect
    from sbrrepro.figures import iou_histograms
    from sbrrepro.report import page, to_html_page, to_markdown_page

    study, rc = with_figure
    _finish(study, rc.key, 0.392, 0.356, epochs=36)
    drawn = []
    real_save = iou_histograms.save
    monkeypatch.setattr(iou_histograms, "save", lambda fig, out: (drawn.append(fig), real_save(fig, out))[1])
    p = page(study, collect(study), "crafted")
    proposals = "IoU distribution of the proposals at the assigner"
    assert p.figures[0] == (f"crafted fig2: {proposals}", study.paths.figure("crafted/fig2").with_suffix(".png"))
    assert drawn[-1].get_suptitle() == proposals and drawn[-1].axes[0].get_xlim() == (0.0, 1.0)
    for text in (to_html_page(p), to_markdown_page(p, study.paths.site)):
        assert f"crafted fig2: {proposals}" in text and "positive training RoIs" not in text

    iou_histograms.draw(study.paths, [(load_plan(tmp_path / "fig2.yaml"), rc)], tmp_path / "positives", "positives")
    assert drawn[-1].get_suptitle() == "IoU distribution of the positive training RoIs"
    assert drawn[-1].axes[0].get_xlim() == (0.5, 1.0)


@pytest.mark.parametrize(("dataset", "named"), [(None, "sbrrepro's small synthetic dataset (shapes)"),
                                                ("mydata", "the dataset mydata")])
def test_the_smoke_footnote_names_the_studys_dataset(tmp_path, dataset, named):
    """At smoke scale the ¶ footnote names what the study trained on: the embedded dataset, or the
    dataset profile given with --dataset (which also gets §)."""
    from sbrrepro.collect import collect
    from sbrrepro.configs import smoke_scale

    (tmp_path / "plan.yaml").write_text(PLAN.format(recipe=REPO / "plans" / "sbr-cnn" / "recipe.yaml"))
    (tmp_path / "published.csv").write_text(PUBLISHED)
    plan = load_plan(tmp_path / "plan.yaml")
    study = Study.open(tmp_path / "study", "smoke", dataset, create=True)
    written = write_configs(plan, smoke_scale(tmp_path / "shapes"), study.paths)
    study.register((plan.path, written))
    _finish(study, next(rc.key for rc in written if rc.row == 2), 0.05, 0.04)
    collect(study)
    md = study.paths.report(plan.name, ".md").read_text()
    assert f"¶ smoke scale: {named} and a ResNet-18, so ours is not comparable with the paper." in md
    assert ("§ trained and evaluated on another dataset than the paper's." in md) == (dataset is not None)
    assert _rows(md)["2"][-1] == ("~ smoke¶" if dataset is None else "~ smoke§¶")
