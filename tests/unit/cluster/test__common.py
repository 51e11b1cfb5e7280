"""sbrrepro.cluster._common: what both executors read of a job's submitit folder: how a job that left
the queue ended, from its result pickle, and the mark of a job sbrrepro cancelled."""

from __future__ import annotations

from submitit.core.utils import JobPaths, cloudpickle_dump

from sbrrepro.cluster import FAILED, FINISHED
from sbrrepro.cluster._common import cancelled_mark, result_state


def test_a_jobs_result_pickle_says_how_it_ended(tmp_path):
    assert result_state("12", tmp_path) == FAILED  # died without reporting
    cloudpickle_dump(("success", {"metrics": {}}), JobPaths(tmp_path, "12", 0).result_pickle)
    assert result_state("12", tmp_path) == FINISHED
    cloudpickle_dump(("error", "Traceback ..."), JobPaths(tmp_path, "13_1", 0).result_pickle)
    assert result_state("13_1", tmp_path) == FAILED  # an array task, by its own id


def test_the_cancelled_mark_is_the_jobs_own_in_its_folder(tmp_path):
    assert cancelled_mark("13_1", tmp_path) == tmp_path / "13_1_cancelled"
    assert cancelled_mark("13_1", tmp_path) != cancelled_mark("13_2", tmp_path)
