"""A tiny real training through the command line and the local executor (submitit, MMEngine,
pycocotools), end to end: plan -> configs -> jobs -> results -> table and figure; then a second
`run` submits nothing, nor does a `run` of a copy of the study in another folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sbrrepro.layout import RunPaths
from sbrrepro.plan import load_plan
from sbrrepro.results import load_histograms
from tests.helpers import cli_json, copy_plan

pytest.importorskip("mmcv._ext")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Table 3 rows 1 (Mask R-CNN) and 3 (R^3-CNN, 2 loops), one epoch at smoke scale, and a Fig. 3
    plan of the same two models (at one epoch its Mask R-CNN 3x schedule is Table 3's): 2 trainings."""
    from tests.helpers import run_cli

    tmp = tmp_path_factory.mktemp("e2e")
    plan_path = copy_plan(tmp, "sbr-cnn/table3", rows=[1, 3])
    figure = copy_plan(tmp, "sbr-cnn/fig3", **{"rows.1.options": {"loops": 2, "iou_thresholds": [0.5, 0.6]}})
    study = tmp / "study"
    args = ("run", str(plan_path), str(figure), "--smoke", "--epochs", "1", "--study", str(study))
    first = run_cli(*args, "--wait", timeout=900)
    second = run_cli(*args)
    return study, plan_path, first, second


def _table3(rows: list[dict]) -> dict[int, dict]:
    return {r["row"]: r for r in rows if r["plan"] == "sbr-cnn/table3"}


def test_run_trains_and_a_second_run_submits_nothing(study, cli):
    root, _, first, second = study
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "submitted 2 job(s) (local) for 4 row(s)" in first.stdout
    assert "submitted 0 job(s)" in second.stdout, second.stdout + second.stderr
    states = cli_json("status", "--study", str(root))
    assert [(s["plan"], s["row"], s["state"]) for s in states] == [
        ("sbr-cnn/fig3", 1, "done"), ("sbr-cnn/fig3", 2, "done"), ("sbr-cnn/table3", 1, "done"),
        ("sbr-cnn/table3", 3, "done")]
    assert all(s["job_id"] and Path(s["config"]).exists() for s in states)


def test_a_copy_of_a_finished_study_elsewhere_submits_nothing(study, cli, tmp_path):
    """Keys name what is trained, not where: the copy's configs name its own data, its rows are done."""
    root, plan_path, _, _ = study
    copy = tmp_path / "moved"
    shutil.copytree(root, copy)
    figure = plan_path.parent / "fig3.yaml"
    dry = cli_json("run", str(plan_path), str(figure), "--smoke", "--epochs", "1", "--study", str(copy),
                   "--dry-run")
    assert [r["would_submit"] for r in dry] == [False] * 4 and {r["state"] for r in dry} == {"done"}
    assert all(str(copy) in Path(r["config"]).read_text() and str(root) not in Path(r["config"]).read_text()
               for r in dry)
    result = cli("run", str(plan_path), str(figure), "--smoke", "--epochs", "1", "--study", str(copy))
    assert "submitted 0 job(s)" in result.stdout, result.stdout + result.stderr


def test_a_damaged_state_store_is_one_clear_error_and_repair_rebuilds_it(study, cli, tmp_path):
    """A store cut short (a full disk, a copy interrupted): `status` and `run` say what to do in one
    line, exit 2; `repair` rebuilds it from the folders, keeping the damaged file; `status` and
    `collect` then give what they gave before, and `run` submits nothing."""
    root, plan_path, _, _ = study
    copy = tmp_path / "damaged"
    shutil.copytree(root, copy)
    before_status = cli_json("status", "--study", str(copy))
    before_rows = cli_json("collect", "--study", str(copy))
    state = copy / "state.sqlite"
    cli("status", "--study", str(copy))  # the WAL is checkpointed into the file at close
    state.write_bytes(state.read_bytes()[:1500])
    args = ("run", str(plan_path), "--smoke", "--epochs", "1", "--study", str(copy))
    for broken in (cli("status", "--study", str(copy)), cli(*args)):
        assert broken.returncode == 2 and "Traceback" not in broken.stderr
        assert len(broken.stderr.strip().splitlines()) == 1 and "sbrrepro repair" in broken.stderr, broken.stderr
    repaired = cli("repair", "--study", str(copy))
    assert repaired.returncode == 0, repaired.stderr
    assert "4 row(s), 2 submission(s)" in repaired.stdout
    assert len(list(copy.glob("state.sqlite.damaged-*"))) == 1
    assert cli_json("status", "--study", str(copy)) == before_status
    assert cli_json("collect", "--study", str(copy)) == before_rows
    assert "submitted 0 job(s)" in cli(*args).stdout


def test_collect_reads_the_metrics_the_runs_computed(study, cli):
    root, plan_path, _, _ = study
    rows = _table3(cli_json("collect", "--study", str(root)))
    published = load_plan(plan_path).published
    for number, row in rows.items():
        # Ours is CocoMetric's line in the run's own log, in the paper's percent with one decimal.
        log = next((root / "runs" / row["key"]).glob("*/vis_data/scalars.json")).read_text().splitlines()
        val = [json.loads(line) for line in log if "loss" not in json.loads(line)][-1]
        assert row["metrics"]["bbox_AP"] == round(100 * val["coco/bbox_mAP"], 1)
        assert row["metrics"]["segm_AP"] == round(100 * val["coco/segm_mAP"], 1)
        assert row["diff"]["bbox_AP"] == round(row["metrics"]["bbox_AP"] - float(published[number]["bbox_AP"]), 1)
        assert row["verdict"] == "smoke"
        assert row["provenance"]["seed"] == 0 and not row["provenance"]["lr_scaled"]
        assert row["provenance"]["versions"]["mmdet"] == "3.3.0"
    printed = cli("collect", "--study", str(root))
    assert "Mask" in printed.stdout and "sbr-cnn-table3.md" in printed.stdout
    md = re.sub(r"\*\*|</?u>", "", (root / "report" / "sbr-cnn-table3.md").read_text())  # best, second best
    paper, ours = float(published[1]["bbox_AP"]), rows[1]["metrics"]["bbox_AP"]
    assert f"| 1 | Mask | 1 | 1 | {paper:.1f} | {ours:.1f} | {ours - paper:+.1f} |" in md
    assert (root / "report" / "sbr-cnn-table3.tex").exists()
    costs = json.loads((root / "costs.json").read_text())  # measured: wall time x processes
    assert sorted(costs) == sorted(r["key"] for r in rows.values()) and all(h > 0 for h in costs.values())


def test_speed_of_the_trained_models_reaches_the_table(study, cli):
    """`speed` times the trained models (batch 1, this machine's device); `collect` then reports it,
    with the size of each final checkpoint."""
    root, plan_path, _, _ = study
    measured = cli_json("speed", str(plan_path), "--smoke", "--study", str(root), "--images", "2", "--epochs", "1")
    assert [m["row"] for m in measured] == [1, 3]
    assert all(m["trained"] and m["images"] == 2 and m["images_per_s"] > 0 and m["peak_memory_GB"] > 0
               for m in measured)
    rows = _table3(cli_json("collect", "--study", str(root)))
    for m in measured:
        metrics = rows[m["row"]]["metrics"]
        assert metrics["speed_fps"] == m["images_per_s"]
        checkpoint = root / "runs" / m["key"] / "epoch_1.pth"
        assert metrics["model_MB"] == checkpoint.stat().st_size / 2**20


def test_each_row_measured_on_the_cpu_gets_its_own_peak_memory():
    """Rows are timed one after another in one process: a row's peak must not be an earlier row's."""
    import numpy as np

    from sbrrepro.speed import peak_rss_GB

    earlier = np.ones(2**28 // 8)  # 256 MiB, touched
    del earlier
    before = peak_rss_GB()
    assert peak_rss_GB(reset=True) < before - 0.2


def test_iou_histograms_per_loop_and_the_figure(study, cli, tmp_path):
    """collect draws the study's figure plan (Fig. 3); plot-iou draws it again, or other rows."""
    root, _, _, _ = study
    states = _table3(cli_json("status", "--study", str(root)))
    mask_rcnn, r3_cnn = (RunPaths(root / "runs" / states[n]["key"]) for n in (1, 3))
    edges, mask = load_histograms(mask_rcnn, "positives")
    assert edges[0] == 0.5 and edges[-1] == 1.0 and len(edges) == 11
    assert list(mask) == ["rcnn"] and sum(mask["rcnn"]) > 0
    _, r3 = load_histograms(r3_cnn, "positives")
    assert sorted(r3) == ["loop1", "loop2"] and sum(r3["loop1"]) > 0
    assert sum(r3["loop2"][:2]) == 0, "loop 2 takes positives at IoU >= 0.6 only"
    edges, proposals = load_histograms(r3_cnn, "proposals")  # every proposal at the assigner
    assert edges[0] == 0.0 and edges[-1] == 1.0 and len(edges) == 21
    assert sorted(proposals) == ["loop1", "loop2"] and sum(proposals["loop1"][:10]) > 0  # negatives too
    assert all(sum(proposals[s]) > sum(r3[s]) for s in r3)
    collected = cli("collect", "--study", str(root))
    assert f"figure: {root / 'figures' / 'sbr-cnn-fig3.png'}" in collected.stdout, collected.stdout
    for ext in ("png", "pdf"):
        assert (root / "figures" / f"sbr-cnn-fig3.{ext}").stat().st_size > 1000
    result = cli("plot-iou", "--study", str(root), "--rows", "sbr-cnn/table3:3", "--out", str(tmp_path / "r3"),
                 "--population", "positives")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r3.png").stat().st_size > 1000


def test_a_generated_config_runs_with_mmdetections_own_train_script(study, cli, tmp_path):
    import mmdet

    root, _, _, _ = study
    config = next(s["config"] for s in cli_json("status", "--study", str(root)) if s["row"] == 3)
    train = Path(mmdet.__file__).parent / ".mim" / "tools" / "train.py"
    result = subprocess.run([sys.executable, str(train), config, "--work-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "epoch_1.pth").exists()
    assert "coco/segm_mAP" in next(tmp_path.glob("*/vis_data/scalars.json")).read_text()


def test_report_pages_compile_and_render_in_a_real_browser(study, cli, tmp_path):
    """`report` writes per paper one self-contained HTML page and one Markdown page; every table of
    the study compiles with pdflatex; Chromium renders the page's tables and its embedded images."""
    from tests.helpers import compile_latex, open_in_browser

    root, _, _, _ = study
    result = cli("report", "--study", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    page, md = root / "report" / "site" / "sbr-cnn.html", root / "report" / "site" / "sbr-cnn.md"
    assert f"report: {page}" in result.stdout and f"report: {md}" in result.stdout
    text = page.read_text()
    assert "src=\"http" not in text and "<link" not in text, "self-contained: nothing fetched"
    assert text.count("data:image/png;base64,") == 2  # Fig. 3 and Table 3's training curves
    assert "Rows reproduced: 0 of 2 run" in text and "smoke: 2" in text
    assert "sbr-cnn/table3 row 3: R^3-CNN against row 1" in text  # its config keys against the baseline row
    assert "model.roi_head.type" in text
    markdown = md.read_text()
    assert "| 1 | Mask | 1 | 1 |" in markdown and "## Setup (ours / the paper's)" in markdown
    assert "../../figures/sbr-cnn-fig3.png" in markdown

    curves = cli("plot-curves", "--study", str(root), "--rows", "sbr-cnn/table3:3", "--out", str(tmp_path / "c"))
    assert curves.returncode == 0 and (tmp_path / "c.png").stat().st_size > 1000, curves.stderr[-2000:]

    latex = compile_latex(sorted((root / "report").glob("*.tex")), tmp_path / "latex")
    assert latex.returncode == 0, latex.stdout[-4000:]

    found, shot = open_in_browser(page, tmp_path / "browser")
    assert found["tables"] >= 2 and found["cells"] > 20, found
    assert found["images"] == found["decoded"] == 2 and found["width"] > 500, found
    from PIL import Image

    image = Image.open(shot).convert("L")
    assert image.size == (1400, 2400)
    assert len(set(image.getdata())) > 50, "the screenshot shows a rendered page, not a blank one"


def test_tensorboard_reads_each_trainings_curves_from_its_work_dir(study, cli):
    """Every training's event files are in its own work dir (runs/<key>/<timestamp>/vis_data/, beside
    scalars.json), where `tensorboard --logdir STUDY/runs` finds them; TensorBoard's own reader finds
    the loss and the learning rate per logged iteration and the validation AP."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _, _, _ = study
    keys = sorted({s["key"] for s in cli_json("status", "--study", str(root))})
    assert len(keys) == 2
    for key in keys:
        vis_data = [p.parent for p in (root / "runs" / key).glob("*/vis_data/events.out.tfevents.*")]
        assert len(vis_data) == 1 and (vis_data[0] / "scalars.json").exists(), key
        events = EventAccumulator(str(vis_data[0]))
        events.Reload()
        for tag in ("loss", "lr", "coco/bbox_mAP", "coco/segm_mAP"):
            assert tag in events.Tags()["scalars"] and events.Scalars(tag), (key, tag, events.Tags())
        losses = events.Scalars("loss")
        assert all(v.value > 0 for v in losses) and [v.step for v in losses] == sorted({v.step for v in losses})


def _ours(md: str, row: int, label: str) -> float:
    """Ours under the metric `label` in a Markdown table's `row` (best and second best unmarked)."""
    lines = [line.strip().strip("|") for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].split("|")]
    cells = next(c for c in ([c.strip() for c in line.split("|")] for line in lines[2:]) if c[0] == str(row))
    return float(re.sub(r"\*\*|</?u>", "", cells[header.index(f"{label} Ours")]))


def test_mask_sizes_under_both_conventions_and_the_papers_in_its_table(study, cli, tmp_path):
    """SBR-CNN Table 11's Mask R-CNN (Table 3 row 1's training: nothing is trained again) keeps the mask
    AP_S/M/L sized by box area (the paper's MMDetection 2.8) and by mask area (3.3's CocoMetric) in
    results.json; its table shows the box-area ones. A training evaluated before both were computed gets
    them by an evaluation of its final checkpoint, once, never a retraining."""
    root, _, _, _ = study
    copy = tmp_path / "sizes"
    shutil.copytree(root, copy)
    plan = copy_plan(tmp_path, "sbr-cnn/table11", rows=[1])
    args = ("run", str(plan), "--smoke", "--epochs", "1", "--study", str(copy))
    assert "submitted 0 job(s)" in (ran := cli(*args)).stdout, ran.stdout + ran.stderr

    def table11_row() -> dict:
        rows = cli_json("collect", "--study", str(copy))
        return next(r for r in rows if r["plan"] == "sbr-cnn/table11")

    row = table11_row()
    metrics, key = row["metrics"], row["key"]
    log = next((copy / "runs" / key).glob("*/vis_data/scalars.json"))
    val = [json.loads(line) for line in log.read_text().splitlines() if "loss" not in json.loads(line)][-1]
    for size in "sml":
        for by in ("box", "mask"):
            assert metrics[f"segm_AP{size}_{by}area"] == round(100 * val[f"coco/segm_mAP_{size}_{by}area"], 1)
        assert metrics[f"segm_AP{size}"] == metrics[f"segm_AP{size}_boxarea"]  # the paper's convention
        assert row["diff"][f"segm_AP{size}"] == round(metrics[f"segm_AP{size}_boxarea"] -
                                                      float(row["published"][f"segm_AP{size}"]), 1)
    md = (copy / "report" / "sbr-cnn-table11.md").read_text()
    assert [_ours(md, 1, f"S_AP{s}") for s in "sml"] == [metrics[f"segm_AP{s}_boxarea"] for s in "sml"], md
    # The same training as if evaluated before this change: CocoMetric's keys only, sized by mask area.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for line in lines:
        for size in "sml":
            if f"coco/segm_mAP_{size}_maskarea" in line:
                line[f"coco/segm_mAP_{size}"] = line.pop(f"coco/segm_mAP_{size}_maskarea")
                del line[f"coco/segm_mAP_{size}_boxarea"]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    dry = cli(*args, "--dry-run")
    assert "would submit 1 job(s)" in dry.stdout, dry.stdout + dry.stderr
    again = cli(*args, "--wait", timeout=600)
    assert "submitted 1 job(s)" in again.stdout, again.stdout + again.stderr
    assert (copy / "runs" / f"{key}-sizes" / "done.json").exists()
    assert not list((copy / "runs" / f"{key}-sizes").glob("*.pth"))  # evaluated, not trained
    assert table11_row()["metrics"] == metrics  # the same checkpoint, the same numbers
    assert "submitted 0 job(s)" in cli(*args).stdout
