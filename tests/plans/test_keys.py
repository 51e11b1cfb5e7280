"""A key names what is trained, never where things live: the key of every row of every plan, at both
scales, is fixed by tests/golden_keys.json, whatever the checkout's, the study's or the data's folder.

A commit that means to change a model updates the golden file with it:
    .venv/bin/python -m tests.plans.test_keys --update
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

from sbrrepro.config_cache import ConfigCache
from sbrrepro.config_files import write_configs
from sbrrepro.configs import full_scale, keyed_config, smoke_scale
from sbrrepro.dataset import SyntheticSpec
from sbrrepro.layout import StudyPaths
from sbrrepro.plan import load_plan
from tests.helpers import PLANS, REPO, plan_files

GOLDEN = REPO / "tests" / "golden_keys.json"
Keys = dict[str, dict[str, dict[str, list[str]]]]


def keys(where: Path, study: Path, backwards: bool = False) -> tuple[Keys, int]:
    """plan -> scale -> row -> [key, key of the training it needs], with the data under `where`, as
    `run` writes them into a study at `study` (through the study's config cache); and how many
    configs the cache served (`backwards`: the plans built in the other order)."""
    scales = {"full": full_scale(where / "coco"), "smoke": smoke_scale(where / "data" / SyntheticSpec().folder_name())}
    out: Keys = {}
    hits = 0
    for name, scale in scales.items():
        paths = StudyPaths(study / name)
        cache = ConfigCache(paths.config_cache)
        for path in sorted(plan_files(), reverse=backwards):
            plan = load_plan(path)
            rows = out.setdefault(plan.name, {}).setdefault(name, {})
            for rc in write_configs(plan, scale, paths, cache):
                rows.setdefault(str(rc.row), [rc.key, rc.train_key])  # a row of several seeds: its first
        cache.save()
        hits += cache.hits
    return {p: dict(sorted(by_scale.items())) for p, by_scale in sorted(out.items())}, hits


@pytest.mark.slow
def test_every_key_is_the_golden_one_wherever_the_data_lives(tmp_path):
    here, served = keys(tmp_path / "a", tmp_path / "study-a")
    assert served == 0
    # again in the same study: every config comes from its cache, with the same keys
    again, served = keys(tmp_path / "a", tmp_path / "study-a")
    assert again == here and served == sum(1 for _ in (tmp_path / "study-a").glob("*/configs/*.py"))
    there, _ = keys(Path("/mnt/elsewhere/b"), tmp_path / "study-b", backwards=True)
    # the data's folder is not part of a key, nor what was built before (no builder shares what it returns)
    assert here == there
    assert here == json.loads(GOLDEN.read_text()), "a key changed: if the model is meant to change, " \
        "run `.venv/bin/python -m tests.plans.test_keys --update` and commit the golden file with it"


def test_the_config_cache_is_only_good_for_the_source_and_files_that_filled_it(tmp_path, monkeypatch):
    """Another sbrrepro source or mmdet version empties it; a config file changed on disk is built again."""
    from sbrrepro import versions

    plan, scale, paths = load_plan(PLANS / "sbr-cnn" / "table3.yaml"), full_scale(tmp_path / "coco"), \
        StudyPaths(tmp_path / "study")

    def served() -> int:
        cache = ConfigCache(paths.config_cache)
        written = write_configs(plan, scale, paths, cache)
        cache.save()
        assert [rc.key for rc in written] == [keyed_config(row, scale)[0] for row in plan.model_rows]
        return cache.hits

    assert (served(), served()) == (0, 5)
    first = next(paths.configs.glob("*.py"))
    first.write_text(first.read_text() + "# edited\n")
    assert served() == 4 and "# edited" not in first.read_text()
    monkeypatch.setattr(versions, "source_digest", lambda: "another source")
    assert served() == 0
    monkeypatch.setattr(versions, "installed", lambda name: "3.4.0" if name == "mmdet" else None)
    assert served() == 0


def test_the_written_config_has_the_real_paths(tmp_path):
    row = load_plan(PLANS / "sbr-cnn" / "table3.yaml").rows[0]
    cfg = keyed_config(row, full_scale(tmp_path / "coco"))[1]
    assert cfg["train_dataloader"]["dataset"]["data_root"] == f"{tmp_path}/coco/"
    assert cfg["val_evaluator"]["ann_file"] == f"{tmp_path}/coco/annotations/instances_val2017.json"


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_text(json.dumps(keys(Path("/data"), Path(tmp))[0], indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
