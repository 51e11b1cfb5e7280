"""A key names what is trained, never where things live: the key of every row of every plan, at both
scales, is fixed by tests/golden_keys.json, whatever the checkout's, the study's or the data's folder.

A commit that means to change a model updates the golden file with it:
    .venv/bin/python tests/test_keys.py --update
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from steps import PLANS, plan_files

from sbrrepro.configs import full_scale, keyed_config, smoke_scale, training_row
from sbrrepro.dataset import SyntheticSpec
from sbrrepro.plan import load_plan

GOLDEN = Path(__file__).with_name("golden_keys.json")


def keys(where: Path, backwards: bool = False) -> dict[str, dict[str, dict[str, list[str]]]]:
    """plan -> scale -> row -> [key, key of the training it needs], with the data under `where`
    (`backwards`: the plans built in the other order)."""
    scales = {"full": full_scale(where / "coco"), "smoke": smoke_scale(where / "data" / SyntheticSpec().folder_name())}
    out: dict[str, dict[str, dict[str, list[str]]]] = {}
    for path in sorted(plan_files(), reverse=backwards):
        plan = load_plan(path)
        for name, scale in scales.items():
            rows = out.setdefault(plan.name, {}).setdefault(name, {})
            for row in plan.model_rows:
                training = training_row(row)
                rows[str(row.number)] = [keyed_config(row, scale)[0], keyed_config(training, scale)[0]]
    return out


def test_every_key_is_the_golden_one_wherever_the_data_lives(tmp_path):
    here, there = keys(tmp_path / "a"), keys(Path("/mnt/elsewhere/b"), backwards=True)
    # the data's folder is not part of a key, nor what was built before (no builder shares what it returns)
    assert here == there
    assert here == json.loads(GOLDEN.read_text()), "a key changed: if the model is meant to change, " \
        "run `.venv/bin/python tests/test_keys.py --update` and commit the golden file with it"


def test_the_written_config_has_the_real_paths(tmp_path):
    row = load_plan(PLANS / "sbr-cnn" / "table3.yaml").rows[0]
    cfg = keyed_config(row, full_scale(tmp_path / "coco"))[1]
    assert cfg["train_dataloader"]["dataset"]["data_root"] == f"{tmp_path}/coco/"
    assert cfg["val_evaluator"]["ann_file"] == f"{tmp_path}/coco/annotations/instances_val2017.json"


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    GOLDEN.write_text(json.dumps(keys(Path("/data")), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
