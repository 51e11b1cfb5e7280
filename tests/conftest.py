"""The tests' fixtures (the helpers are in tests/helpers.py), and the tiers: `--tier fast` runs every
test that needs no training, SLURM, LaTeX or browser (the markers in pyproject.toml) and fails any of
them that takes over FAST_S; `--tier rest` runs the others; the default, every test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO, run_cli, slurm_up

FAST_S = 2.0
NOT_FAST = ("training", "slurm", "latex", "browser", "system", "slow")  # the markers that keep a test out
SYSTEM = Path(__file__).parent / "system"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tier", choices=("fast", "rest", "all"), default="all",
                     help=f"fast: the tests marked none of {', '.join(NOT_FAST)} (each at most {FAST_S:g} s); "
                     "rest: the others; all (default)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SYSTEM in item.path.parents:
            item.add_marker(pytest.mark.system)
    tier = config.getoption("--tier")
    if tier == "all":
        return
    keep, drop = [], []
    for item in items:
        (keep if any(item.get_closest_marker(m) for m in NOT_FAST) == (tier == "rest") else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `slurm` is skipped where no cluster answers (asked only when one is about to run)."""
    if item.get_closest_marker("slurm") and not slurm_up():
        pytest.skip("no SLURM cluster answers here (slurm/cluster.sh start)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if item.config.getoption("--tier") == "fast" and report.when == "call" and report.passed \
            and report.duration > FAST_S:
        report.outcome = "failed"
        report.longrepr = (f"took {report.duration:.1f} s: a test of the fast tier takes at most {FAST_S:g} s; make "
                           f"it faster or mark it with what it needs ({', '.join(NOT_FAST)})")


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The smoke scale on a small generated dataset (4 training, 2 validation images)."""
    from sbrrepro.configs import smoke_scale
    from sbrrepro.dataset import SyntheticSpec, ensure_dataset

    return smoke_scale(ensure_dataset(tmp_path_factory.mktemp("data"), SyntheticSpec(train_images=4, val_images=2)))


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(params=[pytest.param("local", marks=pytest.mark.training),
                        pytest.param("slurm", marks=pytest.mark.slurm)])
def executor(request):
    """Each executor in turn: the shared conformance suite runs against all of them (real jobs: this
    machine's processes, or the SLURM cluster's)."""
    from sbrrepro.cluster.local import LocalExecutor
    from sbrrepro.cluster.profile import load_cluster
    from sbrrepro.cluster.slurm import SlurmExecutor

    if request.param == "slurm":
        return SlurmExecutor(load_cluster(str(REPO / "slurm" / "local-test.yaml")))
    return LocalExecutor(load_cluster(None))


@pytest.fixture
def crafted(tmp_path):
    """The crafted study (`tests.helpers.crafted_study`) and its rows' results, one of every verdict: rows 3
    and 4 failed and running as their jobs' states say (new in their folders): (plan, study, results)."""
    from tests.helpers import crafted_results, crafted_study

    plan, study, written = crafted_study(tmp_path)
    return plan, study, crafted_results(plan, study, written)


@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory):
    """Smoke-scale configs of Table 3 rows 1 and 3 on 8 images for `epochs` epochs."""
    import dataclasses

    from sbrrepro.config_files import write_configs
    from sbrrepro.configs import smoke_scale
    from sbrrepro.dataset import SyntheticSpec, ensure_dataset
    from sbrrepro.layout import StudyPaths
    from sbrrepro.plan import load_plan
    from tests.helpers import TABLE3

    pytest.importorskip("mmcv._ext")  # what they train with
    tmp = tmp_path_factory.mktemp("tiny")
    data = ensure_dataset(tmp / "data", SyntheticSpec(train_images=8, val_images=4))
    plan = load_plan(TABLE3)
    plan = dataclasses.replace(plan, rows=[plan.rows[0], plan.rows[2]])
    return lambda epochs: write_configs(plan, dataclasses.replace(smoke_scale(data), epochs=epochs, warmup_iters=2),
                                       StudyPaths(tmp / f"study-{epochs}"))
