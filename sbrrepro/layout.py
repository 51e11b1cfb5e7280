"""Every file name of a study and of a run, in one place (as submitit's `JobPaths` owns a job's).

    STUDY/study.json            scale of the study (smoke or full), fixed at creation
    STUDY/state.sqlite          the state store: one line per submission and per plan row
    STUDY/rows.json             a plain copy of the store's rows, from which `repair` rebuilds it
    STUDY/configs/*.py          one MMDetection config per plan row (named by its key's hash)
    STUDY/runs/<key>/           one training's or evaluation's work dir (RunPaths), with its own
                                submitit folder when it was submitted alone
    STUDY/runs/<key>-sizes/     the evaluation of a run finished before both mask-size conventions
                                were computed: its final checkpoint evaluated again (`sizes_key`)
    STUDY/arrays/<stamp>/       submitit's folder of one SLURM job array, with the keys of its tasks
    STUDY/data/                 the generated dataset (smoke scale)
    STUDY/results.json, .csv, .parquet, costs.json, params.json, speed.json, report/, figures/

Imports nothing but the standard library, `reader` and `study_files` (which do the same): jobs on compute
nodes use it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import study_files


@dataclass(frozen=True)
class RunPaths:
    """A work dir: what MMEngine writes into it, and what sbrrepro's jobs add."""

    root: Path

    @property
    def done(self) -> Path:  # written last, by the job: the run has finished
        return self.root / "done.json"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def started(self) -> Path:  # the job holds a training slot and runs
        return self.root / "started"

    @property
    def histograms(self) -> Path:  # IoU histograms of the training RoIs, per epoch
        return self.root / "iou_histograms.json"

    @property
    def submitit(self) -> Path:  # submitit's folder of a job submitted alone
        return self.root / "submitit"

    # A row scored by COCO's evaluation server (test-dev): its evaluation writes CocoMetric's
    # detections (prefix 'detections', one file per IoU type), zips each as the server wants them,
    # and waits for the stats the server returns, which `sbrrepro import-stats` stores.
    @property
    def detections_prefix(self) -> Path:  # CocoMetric's outfile_prefix: it appends .<iou type>.json
        return self.root / "detections"

    def detections(self, iou_type: str) -> Path:
        return self.detections_prefix.with_name(f"{self.detections_prefix.name}.{iou_type}.json")

    def upload(self, iou_type: str) -> Path:
        return self.root / f"upload_{iou_type}.zip"

    def uploads(self) -> list[Path]:
        return sorted(self.root.glob("upload_*.zip"))

    @property
    def server_stats(self) -> Path:
        return self.root / "server_stats.json"

    def checkpoint(self, step: int, unit: str = "epoch") -> Path:
        """MMEngine's checkpoint after `step` epochs (or iterations: unit 'iter')."""
        return self.root / f"{unit}_{step}.pth"

    def final_step(self) -> tuple[int, str] | None:
        """How long a finished training trained: (epochs, 'epoch') or (iterations, 'iter'); None
        until done.json is there."""
        if not self.done.exists():
            return None
        done = study_files.done(self.done, study_files.TRAINED)
        return (done["iters"], "iter") if "iters" in done else (done["epochs"], "epoch")

    def final_checkpoint(self) -> Path | None:
        """The checkpoint of a finished training (None until done.json is there)."""
        final = self.final_step()
        return None if final is None else self.checkpoint(*final)

    def scalars(self) -> list[Path]:
        """MMEngine's JSON-lines logs, one per start of the run, oldest first (timestamps sort)."""
        return sorted(self.root.glob("*/vis_data/scalars.json"))


def sizes_key(key: str) -> str:
    """The key of the evaluation that gives a run finished before both conventions of the mask
    AP_S/M/L were computed (box and mask area) both, from its final checkpoint."""
    return f"{key}-sizes"


@dataclass(frozen=True)
class StudyPaths:
    root: Path

    meta = property(lambda self: self.root / "study.json")
    state = property(lambda self: self.root / "state.sqlite")
    rows = property(lambda self: self.root / "rows.json")  # the store's rows, as a plain copy `repair` reads
    submit_lock = property(lambda self: self.root / ".submit.lock")
    configs = property(lambda self: self.root / "configs")
    config_cache = property(lambda self: self.root / "configs" / ".cache.json")  # see config_cache
    arrays = property(lambda self: self.root / "arrays")
    data = property(lambda self: self.root / "data")
    results = property(lambda self: self.root / "results.json")
    # results.json as one line per row and seed, for pandas and spreadsheets
    results_csv = property(lambda self: self.root / "results.csv")
    results_parquet = property(lambda self: self.root / "results.parquet")
    site = property(lambda self: self.root / "report" / "site")  # `sbrrepro report`'s pages, one per paper
    costs = property(lambda self: self.root / "costs.json")  # measured hours per training key
    params = property(lambda self: self.root / "params.json")  # parameter counts by model and options
    speed = property(lambda self: self.root / "speed.json")  # `sbrrepro speed`'s figures per row key
    preflight = property(lambda self: self.root / "preflight.json")  # `sbrrepro preflight`'s findings per key
    preflight_jobs = property(lambda self: self.root / "preflight")  # its jobs' folders and findings

    def run(self, key: str) -> RunPaths:
        return RunPaths(self.root / "runs" / key)

    def config(self, plan: str, row: int, what: str, digest: str) -> Path:
        """A row's config; `what` is '' or '-train' (the training an evaluation-only row needs)."""
        return self.configs / f"{plan.replace('/', '-')}-row{row}{what}-{digest}.py"

    def report(self, plan: str, suffix: str) -> Path:
        return self.root / "report" / f"{plan.replace('/', '-')}{suffix}"

    def figure(self, plan: str) -> Path:
        """A figure plan's output, without its suffix (.png, .pdf, .json beside each other)."""
        return self.root / "figures" / plan.replace("/", "-")

    @staticmethod
    def manifest(array_folder: Path) -> Path:
        """In an array's folder: the keys of its tasks, in task order."""
        return array_folder / "keys.json"
