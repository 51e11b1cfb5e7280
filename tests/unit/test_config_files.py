"""sbrrepro.config_files: every row with a model gets its config written into the study once, an
evaluation-only row also the config of the training it evaluates (`-train`, that training's key), and
a config the study's cache finds written from the same inputs is neither built nor written again."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sbrrepro import config_files
from sbrrepro.config_cache import ConfigCache
from sbrrepro.config_files import build, config_text, training_row, write, write_configs
from sbrrepro.configs import Scale, smoke_scale
from sbrrepro.layout import StudyPaths
from sbrrepro.plan import Plan, load_plan
from tests.helpers import PLANS, copy_plan


@pytest.fixture(scope="module")
def table4() -> Plan:
    """One training (row 4, L_t = L_e = 3) that rows 2, 3, 5 and 6 evaluate with other L_e; row 1 a Mask R-CNN."""
    return load_plan(PLANS / "sbr-cnn" / "table4.yaml")


@pytest.fixture
def scale(tmp_path: Path) -> Scale:
    return smoke_scale(tmp_path / "data")  # paths only: no dataset is read to write configs


@pytest.fixture
def paths(tmp_path: Path) -> StudyPaths:
    return StudyPaths(tmp_path / "study")


@pytest.fixture
def writes(monkeypatch) -> Counter:
    """The config files written, each path with how many times."""
    written: Counter = Counter()
    real = config_files.atomic_write
    monkeypatch.setattr(config_files, "atomic_write", lambda path, text: (written.update([path]), real(path, text)))
    return written


@pytest.fixture
def builds(monkeypatch) -> list:
    """The rows whose config was built."""
    built: list = []
    real = config_files.keyed_config
    monkeypatch.setattr(config_files, "keyed_config", lambda row, scale: built.append(row) or real(row, scale))
    return built


def _run(text: str) -> dict[str, Any]:
    """A config file's top-level values, as MMEngine's Config.fromfile executes it."""
    namespace: dict[str, Any] = {}
    exec(compile(text, "config.py", "exec"), namespace)
    return {k: v for k, v in namespace.items() if k != "__builtins__"}


def test_config_text_reads_back() -> None:
    cfg = {"model": {"type": "MaskRCNN", "roi_head": {"bbox_head": [{"num_classes": 3}] * 2}},
           "train_cfg": {"max_epochs": 12}, "default_scope": "mmdet", "load_from": None, "thr": 0.05,
           "long": ["x" * 50] * 5}
    text = config_text(cfg)
    assert [line.split(" = ")[0] for line in text.splitlines() if not line.startswith(" ")] == list(cfg)
    assert max(map(len, text.splitlines())) <= 110
    assert _run(text) == cfg


def test_training_row(table4: Plan) -> None:
    """An evaluation-only row's training sets its test-time options as that training evaluates itself."""
    row2, row4 = table4.row(2), table4.row(4)
    assert (row2.options["loops"], row2.options["eval_loops"]) == (3, 1)
    trained = training_row(row2)
    assert trained.options == row4.options and trained.recipe == row2.recipe
    assert training_row(row4) == row4
    assert training_row(table4.row(1)) == table4.row(1)


def test_test_dev_row_validates_on_val(tmp_path: Path, scale: Scale, paths: StudyPaths) -> None:
    """A row scored by the evaluation server evaluates the training that validates on val2017: its own
    config writes the uploads, its -train config is scored locally."""
    plan = load_plan(copy_plan(tmp_path, "scnet/table1", rows=[1, 2]))  # row 2 is cited: no config
    assert training_row(plan.row(1)).recipe["eval_split"] == "val2017"
    (rc,) = write_configs(plan, scale, paths)
    assert rc.eval_only and rc.train_path.name.startswith("scnet-table1-row1-train-")
    own, training = _run(rc.path.read_text()), _run(rc.train_path.read_text())
    assert own["test_evaluator"]["format_only"] is True
    assert own["test_dataloader"]["dataset"]["ann_file"] == "annotations/image_info_test.json"
    assert training["test_evaluator"]["format_only"] is False
    assert training["val_dataloader"]["dataset"]["ann_file"] == "annotations/instances_val.json"


def test_each_config_written_once(table4: Plan, scale: Scale, paths: StudyPaths, writes: Counter) -> None:
    records = write_configs(table4, scale, paths)
    assert [rc.row for rc in records] == [1, 2, 3, 4, 5, 6]
    row4 = records[3]
    assert [rc.eval_only for rc in records] == [False, True, True, False, True, True]
    for rc in records:
        assert rc.path.is_file() and rc.train_path.is_file() and (rc.plan, rc.seed) == ("sbr-cnn/table4", 0)
        assert rc.path.name == f"sbr-cnn-table4-row{rc.row}-{rc.key.rsplit('-', 1)[1]}.py"
        if rc.eval_only:  # the training of row 4, in a -train config of its own row
            assert rc.train_key == row4.key != rc.key
            assert rc.train_path.name == f"sbr-cnn-table4-row{rc.row}-train-{row4.key.rsplit('-', 1)[1]}.py"
            header, _, body = rc.train_path.read_text().partition("\n")
            assert header == f"# sbr-cnn/table4 row {rc.row}-train: R^3-CNN (smoke scale), generated by sbrrepro"
            assert body == row4.path.read_text().partition("\n")[2]  # row 4's config, as its key says
        else:
            assert (rc.train_key, rc.train_path) == (rc.key, rc.path)
    assert len({rc.key for rc in records}) == 6
    files = sorted(paths.configs.glob("*.py"))
    assert len(files) == 10 and set(writes) == set(files) and set(writes.values()) == {1}


def test_a_label_is_one_comment_line(tmp_path: Path, scale: Scale, paths: StudyPaths) -> None:
    plan = load_plan(copy_plan(tmp_path, "sbr-cnn/table4", rows=[1], **{"rows.0.label": "Mask\nR-CNN\r\n 1x"}))
    (rc,) = write_configs(plan, scale, paths)
    text = rc.path.read_text()
    assert text.splitlines()[0] == "# sbr-cnn/table4 row 1: Mask R-CNN 1x (smoke scale), generated by sbrrepro"
    assert rc.label == "Mask\nR-CNN\r\n 1x"  # the record keeps the plan's label
    assert _run(text)["model"]["type"] == "MaskRCNN"


def test_one_record_per_seed(tmp_path: Path, scale: Scale, paths: StudyPaths) -> None:
    plan = load_plan(copy_plan(tmp_path, "sbr-cnn/table4", rows=[1], seeds=[0, 2]))
    records = write_configs(plan, scale, paths)
    assert [(rc.row, rc.seed) for rc in records] == [(1, 0), (1, 2)]
    assert records[0].key != records[1].key and all(rc.path.is_file() for rc in records)
    assert _run(records[1].path.read_text())["randomness"]["seed"] == 2


def test_unchanged_file_not_rewritten(table4: Plan, scale: Scale, paths: StudyPaths, writes: Counter) -> None:
    """Without a cache every config is built again, but a file already holding its text is left as it is."""
    write_configs(table4, scale, paths)
    writes.clear()
    first = {p: p.stat().st_mtime_ns for p in paths.configs.glob("*.py")}
    write_configs(table4, scale, paths)
    assert not writes and {p: p.stat().st_mtime_ns for p in paths.configs.glob("*.py")} == first


def test_cached_config_not_rebuilt(table4: Plan, scale: Scale, paths: StudyPaths, writes: Counter,
                                   builds: list) -> None:
    cache = ConfigCache(paths.config_cache)
    records = write_configs(table4, scale, paths, cache)
    cache.save()
    assert len(builds) == 10 and cache.hits == 0
    texts = {p: p.read_text() for p in paths.configs.glob("*.py")}
    builds.clear()
    writes.clear()

    again = ConfigCache(paths.config_cache)
    assert write_configs(table4, scale, paths, again) == records
    assert builds == [] and not writes and again.hits == 10

    edited = records[2].path  # row 3's own config, edited by hand: built and written again, alone
    edited.write_text(texts[edited] + "model = None\n")
    again = ConfigCache(paths.config_cache)
    assert write_configs(table4, scale, paths, again) == records
    assert [row.number for row in builds] == [3] and list(writes) == [edited]
    assert edited.read_text() == texts[edited]


def test_build_with_configs_builds_every_one(table4: Plan, scale: Scale, paths: StudyPaths, builds: list) -> None:
    """`configs=True` (the configs are read before they are written): built even where the cache has them."""
    cache = ConfigCache(paths.config_cache)
    write(build([table4], scale, paths, cache, configs=False), scale, cache)
    cache.save()
    builds.clear()
    built = build([table4], scale, paths, ConfigCache(paths.config_cache), configs=True)
    assert len(builds) == 10 and all(rb.own.cfg is not None and rb.training.cfg is not None for rb in built)
    assert [rb.own.what for rb in built] == [""] * 6
    assert [rb.training.what for rb in built] == ["", "-train", "-train", "", "-train", "-train"]
    assert [rb.record() for rb in built] == write_configs(table4, scale, paths)


def test_other_scale_other_configs(table4: Plan, scale: Scale, paths: StudyPaths) -> None:
    """A scaled-down schedule is another config, with another key, beside the first."""
    one = write_configs(table4, scale, paths)
    two = write_configs(table4, dataclasses.replace(scale, epochs=2), paths)
    assert {rc.key for rc in one}.isdisjoint(rc.key for rc in two)
    assert len(list(paths.configs.glob("*.py"))) == 20
