"""`sbrrepro repair`: a damaged state store rebuilt from what the study folder holds.

The store holds two things, and the folder holds both again: the rows (their plain copy, rows.json,
written with every registration) and the submissions (every job leaves its submitit folder: a job
pickle named by its id, in the key's own folder or in an array's folder that lists its keys; SLURM
also leaves its sbatch script). The newest submission of each key is the one recorded; states come
from the work dirs and the executors as always.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import jobs
from .errors import UserError
from .layout import StudyPaths, sizes_key
from .study import Study, made, saved_rows


@dataclass(frozen=True)
class Repaired:
    rows: int
    submissions: int
    kept: Path  # the damaged store, moved aside


def _kind(trace: jobs.Trace) -> str:
    """Which executor made a submission: SLURM's leaves its sbatch script (one per array)."""
    base = trace.job_id.split("_")[0]
    return "slurm" if (trace.folder / f"{base}_submission.sh").exists() else "local"


def repair(root: Path) -> Repaired:
    paths = StudyPaths(root.resolve())
    if not paths.meta.exists():
        raise UserError(str(root), None, "no study here; pass the study's folder with --study")
    if not paths.rows.exists():
        raise UserError(str(paths.rows), None, "missing, so the rows cannot be rebuilt (a study made before "
                        "sbrrepro kept it): move state.sqlite aside and run the plans again with "
                        "`sbrrepro run PLAN... --dry-run`, which registers them and finds every job again")
    # every file read and checked before anything is moved or written
    meta = made(paths.meta)
    study = Study(paths.root, meta["scale"], meta.get("dataset"))
    rows = saved_rows(paths.rows)
    configs = {r["key"]: r["config"] for r in rows} | {r["train_key"]: r["train_config"] for r in rows}
    # the evaluations that gave runs finished before both mask-size conventions were computed both
    configs |= {sizes_key(r["key"]): r["config"] for r in rows if paths.run(sizes_key(r["key"])).submitit.exists()}
    submissions = []
    for key, found in jobs.traces(study, configs).items():
        if found:
            newest = max(found, key=lambda t: t.time)
            submissions.append((key, configs[key], _kind(newest), newest.job_id, newest.folder, len(found),
                                newest.time))
    kept = study.rebuild(rows, submissions)
    return Repaired(len(rows), len(submissions), kept)
