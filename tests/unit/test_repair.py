"""sbrrepro.repair: a damaged state store rebuilt from what the study folder holds: the rows from their
plain copy, and each key's newest submission from the job pickles in its own folder or in an array's
folder that lists its keys (SLURM's leaving its sbatch script); the damaged file is kept aside."""

from __future__ import annotations

import json
import os

import pytest

from sbrrepro.errors import UserError
from sbrrepro.layout import StudyPaths
from sbrrepro.repair import repair
from sbrrepro.study import Study
from tests.helpers import dry_run_study


def _submitted(folder, *job_ids: str, script: str | None = None) -> None:
    """The job pickles submitit leaves on submitting, oldest first; SLURM's sbatch script too."""
    folder.mkdir(parents=True, exist_ok=True)
    for age, job_id in enumerate(reversed(job_ids)):
        pickle = folder / f"{job_id}_submitted.pkl"
        pickle.write_bytes(b"")
        os.utime(pickle, (1_700_000_000 - age, 1_700_000_000 - age))
    if script:
        (folder / f"{script}_submission.sh").write_text("#!/bin/bash\n")


def test_a_damaged_store_is_rebuilt_with_its_rows_and_each_keys_newest_submission(tmp_path):
    study, rows = dry_run_study(tmp_path)
    keys = [r.key for r in rows]
    registered = study.rows()
    _submitted(study.paths.run(keys[0]).submitit, "40", "41")  # a local job, submitted twice
    array = study.paths.arrays / "20260101-000000-abcdef"
    StudyPaths.manifest(array).parent.mkdir(parents=True)
    StudyPaths.manifest(array).write_text(json.dumps(keys[1:3]))
    _submitted(array, "50_0", "50_1", script="50")  # a SLURM array of two trainings
    study.paths.state.write_bytes(b"SQLite format 3\0" + b"\xff" * 100)  # cut short

    repaired = repair(study.root)
    assert (repaired.rows, repaired.submissions) == (5, 3)
    assert repaired.kept.name.startswith("state.sqlite.damaged-") and repaired.kept.read_bytes()[:6] == b"SQLite"
    again = Study.open(study.root)
    assert again.rows() == registered
    subs = again.submissions()
    assert {k: (s.executor, s.job_id, s.folder, s.attempts) for k, s in subs.items()} == {
        keys[0]: ("local", "41", study.paths.run(keys[0]).submitit, 2),
        keys[1]: ("slurm", "50_0", array, 1), keys[2]: ("slurm", "50_1", array, 1)}


def test_repair_needs_a_study_and_its_rows_copy(tmp_path):
    with pytest.raises(UserError, match="no study here"):
        repair(tmp_path)
    study, _ = dry_run_study(tmp_path)
    study.paths.rows.unlink()
    with pytest.raises(UserError, match="missing, so the rows cannot be rebuilt"):
        repair(study.root)
    assert study.paths.state.exists() and not list(study.root.glob("state.sqlite.damaged-*")), "nothing moved"
