"""The command line's grammar: every subcommand of `sbrrepro` with its arguments and their help.
`sbrrepro.cli` runs what it parses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .vocabulary import FRAMEWORKS

DEFAULT_STUDY = Path("studies/default")
DATASET_HELP = ("a dataset profile (YAML: train/val annotation files and image folders) to train and evaluate on "
                "instead of COCO (full scale) or the embedded dataset (--smoke)")


class _Version(argparse.Action):
    """--version: sbrrepro's version and commit, then the pinned stack's versions (read only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print sbrrepro's version and commit, and the "
                         "versions of its stack, then exit")

    def __call__(self, p: argparse.ArgumentParser, *_) -> None:
        from . import versions

        found = versions.stack()
        print(f"sbrrepro {found.pop('sbrrepro')} (commit {versions.commit() or 'unknown'})")
        print(", ".join(f"{name} {v or 'not installed'}" for name, v in found.items()))
        p.exit()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sbrrepro", description="Reproduce instance-segmentation papers' tables on "
                                "MMDetection, on this machine or a SLURM cluster: `sbrrepro run plans/table5.yaml`, "
                                "then `sbrrepro status` and `sbrrepro collect`.")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True)

    def study_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--study", default=str(DEFAULT_STUDY), help="study folder (default: %(default)s)")

    def rows_arg(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument("--rows", nargs="+", metavar="ROW", help=f"{what}, each N (the only plan's row N), PLAN:N "
                        "(e.g. sbr-cnn/table3:4) or PLAN:N@SEED (one seed)")

    run = sub.add_parser("run", help="write each plan row's config and submit what is not done or running")
    run.add_argument("plans", nargs="+", help="plan files, e.g. plans/sbr-cnn/table3.yaml")
    study_arg(run)
    run.add_argument("--smoke", action="store_true",
                     help="scaled down: generated dataset, ResNet-18 from scratch, small images, few epochs")
    run.add_argument("--cluster", help="cluster profile: a YAML file or a name in slurm/ (default: this machine)")
    run.add_argument("--epochs", type=int, help="train every row this many epochs instead (lr steps scaled "
                     "alike): a quick check of the whole path")
    run.add_argument("--data-root", help="COCO folder for full scale (default: $SBRREPRO_COCO or data/coco)")
    run.add_argument("--dataset", help=DATASET_HELP)
    run.add_argument("--seeds", type=int, help="train every row with seeds 0 .. N-1 (each a training of its own); "
                     "ours is then their mean ± std (default: the plans' seeds)")
    run.add_argument("--framework", choices=FRAMEWORKS, help="build every row with this MMDetection's model "
                     "settings instead of those of the one its paper's numbers came from (e.g. mmdet-3.3: the era's "
                     "effect); rows so built are footnoted")
    run.add_argument("--dry-run", action="store_true", help="write the configs, print what would be submitted")
    run.add_argument("--wait", action="store_true", help="wait until every row is done or failed")
    run.add_argument("--retry-failed", action="store_true", help="submit failed trainings again")
    run.add_argument("--json", action="store_true", help="with --dry-run: print a JSON list of rows")
    rows_arg(run, "submit only these rows (and the trainings they need); every row of the plans is registered, "
             "and a later run without --rows submits the rest")

    pre = sub.add_parser("preflight", help="before GPU-hours: each unique full-scale training takes a few real "
                         "steps and one prediction on one device of the profile (s/iter, memory, fits)")
    pre.add_argument("plans", nargs="+", help="plan files, e.g. plans/groie/table2.yaml")
    study_arg(pre)
    pre.add_argument("--cluster", help="cluster profile: one of its GPUs per training (default: this machine)")
    pre.add_argument("--data-root", help="COCO folder (default: $SBRREPRO_COCO or data/coco; without COCO, the "
                     "embedded dataset at the given size)")
    pre.add_argument("--steps", type=int, default=3, help="timed training steps, after 2 not timed (default: 3)")
    pre.add_argument("--image-size", default=None, metavar="WxH", help="every training image resized to this "
                     "(default: the row's own largest, e.g. 1333x800)")
    pre.add_argument("--random-init", action="store_true", help="no pretrained weights (default: load them)")
    pre.add_argument("--framework", choices=FRAMEWORKS, help="as run's --framework")
    rows_arg(pre, "preflight only these rows' trainings")

    status = sub.add_parser("status", help="each row's state and job id")
    study_arg(status)
    status.add_argument("--json", action="store_true")
    rows_arg(status, "show only these rows (default: all)")

    doctor = sub.add_parser("doctor", help="before the first run: a short job on one node and one on two nodes "
                            "check torch, CUDA, the GPUs, mmcv's ops, an all-reduce, the data and the weights there")
    doctor.add_argument("--cluster", help="cluster profile: a YAML file or a name in slurm/ (default: this machine, "
                        "one job)")
    doctor.add_argument("--data-root", help="COCO folder the nodes must read (default: $SBRREPRO_COCO or data/coco)")
    doctor.add_argument("--weights", help="weights cache the nodes must read (default: the profile's weights, else "
                        "$SBRREPRO_WEIGHTS, else not checked)")
    doctor.add_argument("--folder", default="studies/doctor", help="where the jobs' files and logs go, a folder the "
                        "nodes share (default: %(default)s)")
    doctor.add_argument("--timeout", type=float, default=10, metavar="MIN", help="cancel the jobs not ended after "
                        "this many minutes, queueing included (default: %(default)s)")

    cancel = sub.add_parser("cancel", help="cancel the pending and running jobs of a study (or of --rows)")
    study_arg(cancel)
    rows_arg(cancel, "cancel only these rows' jobs (default: all)")

    collect = sub.add_parser("collect", help="metrics of finished runs -> results.json and tables (MD, LaTeX)")
    study_arg(collect)
    collect.add_argument("--json", action="store_true")

    report = sub.add_parser("report", help="collect, then one self-contained HTML page and one Markdown page per "
                            "paper of the study (summary, tables, figures, setups, config changes, failures)")
    study_arg(report)

    checkdata = sub.add_parser("check-data", help="check a dataset's annotations and images before training on it")
    checkdata.add_argument("dataset", help="a dataset profile (YAML), coco2017 (with --data-root) or shapes (the "
                           "embedded dataset, made in the study)")
    checkdata.add_argument("--data-root", help="COCO folder for coco2017 (default: $SBRREPRO_COCO or data/coco)")
    study_arg(checkdata)

    repair = sub.add_parser("repair", help="rebuild a damaged state store from the study's folders")
    study_arg(repair)

    stats = sub.add_parser("import-stats", help="store the stats COCO's evaluation server returned for a "
                           "test-dev row (`collect` then reports them)")
    stats.add_argument("row", help="the row, as PLAN:N (e.g. scnet/table1:9)")
    stats.add_argument("stats", help="JSON: per IoU type ('bbox', 'segm') the 12 numbers of COCOeval's summary, "
                       "as fractions")
    study_arg(stats)

    server = sub.add_parser("local-server", help="smoke studies: score a test-dev row's uploads as the evaluation "
                            "server would, against the embedded dataset's withheld annotations")
    server.add_argument("row", help="the row, as PLAN:N (e.g. scnet/table1:9)")
    study_arg(server)
    server.add_argument("--out", help="write the stats here (the file import-stats reads; default: print them)")

    params = sub.add_parser("params", help="each row's trainable parameters beside the published count")
    params.add_argument("plans", nargs="+", help="plan files, e.g. plans/sbr-cnn/table6.yaml")
    params.add_argument("--json", action="store_true", help="per plan and row: ours and published")

    speed = sub.add_parser("speed", help="inference images/s (batch 1, one device) and peak memory per row")
    speed.add_argument("plans", nargs="+", help="plan files, e.g. plans/sbr-cnn/table6.yaml")
    study_arg(speed)
    speed.add_argument("--smoke", action="store_true", help="the smoke-scale models on the embedded dataset")
    speed.add_argument("--data-root", help="COCO folder for full scale (default: $SBRREPRO_COCO or data/coco)")
    speed.add_argument("--dataset", help=DATASET_HELP)
    speed.add_argument("--images", type=int, default=20, help="timed images per row (default: %(default)s)")
    speed.add_argument("--epochs", type=int, help="as given to `run`: the rows' configs (and so their "
                       "trained weights) depend on it")
    speed.add_argument("--framework", choices=FRAMEWORKS, help="as given to `run`")
    speed.add_argument("--json", action="store_true")

    plot = sub.add_parser("plot-iou", help="Fig. 3: IoU distribution of the training RoIs")
    study_arg(plot)
    rows_arg(plot, "rows to draw (default: the rows of the study's iou_histograms figure plans, e.g. "
             "plans/sbr-cnn/fig3.yaml)")
    plot.add_argument("--out", help="output path without extension (default: STUDY/figures/<plan>, e.g. sbr-cnn-fig3)")
    plot.add_argument("--population", choices=("proposals", "positives"), default="proposals",
                      help="every proposal at the assigner, negatives included (the authors' histograms), or the "
                      "positive RoIs that train the heads (default: %(default)s)")

    curves = sub.add_parser("plot-curves", help="training loss and validation AP per epoch of any rows")
    study_arg(curves)
    rows_arg(curves, "rows to draw (default: every trained row of the study; a row of several seeds: its first)")
    curves.add_argument("--out", help="output path without extension (default: STUDY/figures/training-curves)")

    anchors = sub.add_parser("plot-anchors", help="Fig. 1: %% of ground-truth boxes with no anchor above an IoU")
    anchors.add_argument("plan", nargs="?", default="plans/sbr-cnn/fig1.yaml", help="default: %(default)s")
    study_arg(anchors)
    anchors.add_argument("--data-root", help="COCO folder (default: $SBRREPRO_COCO; without either, the "
                         "embedded dataset)")
    anchors.add_argument("--dataset", help="a dataset profile (YAML): its training annotations instead of COCO's")
    anchors.add_argument("--out", help="output path without extension (default: STUDY/figures/sbr-cnn-fig1)")
    anchors.add_argument("--json", action="store_true")
    return p
