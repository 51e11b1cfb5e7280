"""sbrrepro.cluster.profile: a cluster profile is validated field by field (unsafe or wrong ones refused,
by the library and the command line), has the schema's fields and defaults, pickles, and without one the
jobs run on this machine."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from sbrrepro.cluster import make_executor
from sbrrepro.cluster.profile import PROFILE_FIELDS, ClusterProfile, load_cluster
from sbrrepro.errors import UserError
from tests.helpers import REPO, TABLE3


@pytest.mark.parametrize(("text", "field", "problem"), [
    ("executor: slurm\npartition: 'gpu; rm -rf ~'\n", "partition", "letters, digits"),
    ("executor: slurm\nsbatch: {'mem; reboot': 1}\n", "sbatch", "sbatch parameter"),
    ("executor: kubernetes\n", "executor", "not one of"),
    ("executor: slurm\nnode: 2\n", "node", "unknown field"),
    ("executor: slurm\narray_parallelism: 0\n", "array_parallelism", "must be > 0"),
    ("executor: slurm\nmax_array_size: many\n", "max_array_size", "expected an integer"),
])
def test_unsafe_or_wrong_profiles_are_refused(tmp_path, cli, text, field, problem):
    profile = tmp_path / "bad.yaml"
    profile.write_text(text)
    with pytest.raises(UserError, match=problem):
        load_cluster(str(profile))
    result = cli("run", str(TABLE3), "--smoke", "--dry-run", "--cluster", str(profile),
                 "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and f"field '{field}'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()


def test_default_profile_is_this_machine():
    assert make_executor(load_cluster(None)).kind == "local"


def test_the_profile_has_a_field_per_schema_field_with_its_default_and_pickles():
    assert [f.name for f in dataclasses.fields(ClusterProfile)] == ["name", *PROFILE_FIELDS]
    assert ClusterProfile() == load_cluster(None)
    paper = load_cluster(str(REPO / "slurm" / "paper.yaml"))
    assert pickle.loads(pickle.dumps(paper)) == paper and paper.name == "paper" and paper.nodes == 2
