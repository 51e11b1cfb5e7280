"""TensorBoard watches every training: its backend is in each written config, beside the visualizer's
own backends and once, and outside the key (it changes nothing trained, so nothing trains again).
tests/system/test_end_to_end.py reads the event files that a real training writes."""

from __future__ import annotations

import json

import pytest

from sbrrepro import configs
from sbrrepro.config_files import write_configs
from sbrrepro.configs import full_scale, keyed_config
from sbrrepro.layout import StudyPaths
from sbrrepro.plan import load_plan
from sbrrepro.zoo import MODELS
from tests.helpers import PLANS, REPO

LOCAL, TENSORBOARD = dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")
MASK_RCNN = "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"


def _backends(cfg: dict) -> list[dict]:
    return cfg["visualizer"]["vis_backends"]


def test_the_written_config_has_the_backend_and_the_key_is_the_one_without_it(tmp_path, monkeypatch):
    from mmengine.config import Config

    plan, scale = load_plan(PLANS / "sbr-cnn" / "table3.yaml"), full_scale(tmp_path / "coco")
    written = write_configs(plan, scale, StudyPaths(tmp_path / "study"))
    golden = json.loads((REPO / "tests" / "golden_keys.json").read_text())["sbr-cnn/table3"]["full"]
    assert [rc.key for rc in written] == [golden[str(rc.row)][0] for rc in written]
    for rc in written:
        assert Config.fromfile(str(rc.path)).visualizer.vis_backends == [LOCAL, TENSORBOARD]
    row = plan.rows[0]
    key, cfg = keyed_config(row, scale)
    monkeypatch.setattr(configs, "with_tensorboard", lambda cfg: cfg)
    bare_key, bare = keyed_config(row, scale)
    assert key == bare_key and _backends(bare) == [LOCAL] and _backends(cfg) == [LOCAL, TENSORBOARD]
    assert {**cfg, "visualizer": bare["visualizer"]} == bare, "the backend is all that it adds"


@pytest.mark.slow
def test_base_config_rows_get_the_backend_once_and_untrained_rows_none(tmp_path):
    import yaml

    scale = full_scale(tmp_path / "coco")
    (tmp_path / "watched.py").write_text(
        f"_base_ = '{MASK_RCNN}'\n"
        "visualizer = dict(vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])\n")
    (tmp_path / "unseen.py").write_text(f"_base_ = '{MASK_RCNN}'\nvisualizer = None\n")
    plan = tmp_path / "mine.yaml"
    plan.write_text(yaml.safe_dump({"paper": "my-study", "table": "one", "title": "mine", "metrics": ["segm_AP"],
                                    "baseline": 1, "rows": [{"row": 1, "base": MASK_RCNN},
                                                            {"row": 2, "base": "watched.py"},
                                                            {"row": 3, "base": "unseen.py"}]}))
    stock, watched, unseen = (keyed_config(r, scale)[1]["visualizer"] for r in load_plan(plan).rows)
    assert stock == dict(type="DetLocalVisualizer", vis_backends=[LOCAL, TENSORBOARD], name="visualizer")
    assert watched["vis_backends"] == [LOCAL, TENSORBOARD]  # already there: not twice
    assert unseen == dict(type="Visualizer", name="visualizer", vis_backends=[LOCAL, TENSORBOARD])  # MMEngine's
    counted = load_plan(PLANS / "sbr-cnn" / "table1.yaml").model_rows[0]  # counts parameters, trains nothing
    assert not MODELS[counted.model].trains and "visualizer" not in keyed_config(counted, scale)[1]
