"""sbrrepro.server: the evaluation server's stats imported for a test-dev row (checked: per IoU type the
row uploaded, COCOeval's 12 fractions or -1), each refusal one UserError that writes nothing; and the
local stand-in, which refuses a full-scale study and scores a smoke study's uploads with pycocotools."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sbrrepro.dataset import SyntheticSpec
from sbrrepro.errors import UserError
from sbrrepro.rows import RowConfig
from sbrrepro.server import STATS, import_stats, local_server
from sbrrepro.study import Study
from tests.helpers import PLANS

PLAN = PLANS / "scnet" / "table1.yaml"
NUMBERS = [0.41, 0.62, 0.45, 0.22, 0.44, 0.55, 0.33, 0.52, 0.54, 0.35, 0.58, -1]


def _row(study: Study, row: int = 9, seed: int = 0, key: str = "scnet-0123456789ab") -> RowConfig:
    configs = study.root / "configs"
    return RowConfig("scnet/table1", row, "scnet", "SCNet", configs / f"row{row}.py", key,
                     configs / f"row{row}-train.py", "scnet-ba9876543210", seed)


def _study(root: Path, scale: str = "full", uploads: tuple[str, ...] = ("bbox", "segm"),
           seeds: tuple[int, ...] = (0,)) -> tuple[Study, RowConfig]:
    """A study holding SCNet Table 1 row 9 (a test-dev row), whose evaluation wrote `uploads`."""
    study = Study.open(root, scale, create=True)
    rows = [_row(study, seed=s, key=f"scnet-0123456789a{s}") for s in seeds]
    study.register((PLAN, rows))
    study.paths.run(rows[0].key).root.mkdir(parents=True)
    for iou in uploads:
        with zipfile.ZipFile(study.paths.run(rows[0].key).upload(iou), "w") as z:
            z.writestr("detections_test-dev2017_sbrrepro_results.json", "[]")
    return study, rows[0]


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _refused(study: Study, wanted: str, stats: Path) -> UserError:
    with pytest.raises(UserError) as e:
        import_stats(study, wanted, stats)
    assert not study.paths.run("scnet-0123456789a0").server_stats.exists()  # nothing written
    return e.value


def test_import_stats(tmp_path: Path) -> None:
    study, rc = _study(tmp_path / "study", uploads=("bbox", "segm"))
    stats = _write(tmp_path / "stats.json", {"bbox": NUMBERS, "segm": [0, 1, *NUMBERS[2:]], "keypoints": "ignored"})
    found = import_stats(study, "scnet/table1:9", stats)
    assert found == {**{f"coco/bbox_{name}": float(v) for name, v in zip(STATS, NUMBERS)},
                     **{f"coco/segm_{name}": float(v) for name, v in zip(STATS, [0, 1, *NUMBERS[2:]])}}
    assert found["coco/bbox_mAP"] == 0.41 and found["coco/bbox_AR_l"] == -1.0 and type(found["coco/segm_mAP"]) is float
    assert json.loads(study.paths.run(rc.key).server_stats.read_text()) == found


def test_import_again_replaces(tmp_path: Path) -> None:
    study, rc = _study(tmp_path / "study", uploads=("segm",))
    import_stats(study, "9", _write(tmp_path / "a.json", {"segm": NUMBERS}))
    import_stats(study, "9", _write(tmp_path / "b.json", {"segm": [0.5] * 12}))
    assert json.loads(study.paths.run(rc.key).server_stats.read_text()) == \
        {f"coco/segm_{name}": 0.5 for name in STATS}


def test_only_the_uploaded_types_are_needed(tmp_path: Path) -> None:
    study, _ = _study(tmp_path / "study", uploads=("segm",))
    assert set(import_stats(study, "9", _write(tmp_path / "s.json", {"segm": NUMBERS}))) == \
        {f"coco/segm_{name}" for name in STATS}


@pytest.mark.parametrize("data, field, said", [
    ({"segm": NUMBERS}, "bbox", "missing: scnet/table1 row 9 uploaded bbox, segm"),
    ({"bbox": NUMBERS, "segm": NUMBERS[:11]}, "segm",
     "expected COCOeval's 12 numbers (mAP, mAP_50, mAP_75, mAP_s, mAP_m, mAP_l, AR_1, AR_10, AR_100, AR_s, AR_m, "
     "AR_l) as fractions in [0, 1] (or -1), got [0.41,"),
    ({"bbox": [41.0, *NUMBERS[1:]], "segm": NUMBERS}, "bbox", "as fractions in [0, 1] (or -1), got [41.0,"),
    ({"bbox": NUMBERS, "segm": [-0.5, *NUMBERS[1:]]}, "segm", "got [-0.5,"),
    ({"bbox": NUMBERS, "segm": ["0.4", *NUMBERS[1:]]}, "segm", "got ['0.4',"),
    ({"bbox": NUMBERS, "segm": {"mAP": 0.4}}, "segm", "got {'mAP': 0.4}"),
    ('{"bbox": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "segm": []}', "bbox", "got [nan,"),
    ([NUMBERS, NUMBERS], None, "expected a mapping of IoU type to COCOeval's 12 numbers, got list"),
    ('{"bbox": [0.4,', None, "not valid JSON (line 1, column 15)"),
])
def test_bad_stats(tmp_path: Path, data: Any, field: str | None, said: str) -> None:
    study, _ = _study(tmp_path / "study")
    stats = _write(tmp_path / "stats.json", data)
    e = _refused(study, "scnet/table1:9", stats)
    assert (e.where, e.field) == (str(stats), field) and said in e.message, e.message


def test_a_boolean_is_no_stat(tmp_path: Path) -> None:
    study, _ = _study(tmp_path / "study", uploads=("segm",))
    _refused(study, "9", _write(tmp_path / "stats.json", {"segm": [True, *NUMBERS[1:]]}))


@pytest.mark.parametrize("make, said", [(lambda p: None, "cannot read the stats: No such file or directory"),
                                        (lambda p: p.mkdir(), "cannot read the stats: Is a directory")])
def test_unreadable_stats_file(tmp_path: Path, make, said: str) -> None:
    study, _ = _study(tmp_path / "study")
    make(tmp_path / "stats.json")
    e = _refused(study, "9", tmp_path / "stats.json")
    assert str(e) == f"{tmp_path / 'stats.json'}: {said}"


def test_a_row_without_uploads_is_not_a_server_row(tmp_path: Path) -> None:
    study, _ = _study(tmp_path / "study", uploads=())
    e = _refused(study, "scnet/table1:9", _write(tmp_path / "stats.json", {"bbox": NUMBERS, "segm": NUMBERS}))
    assert (e.where, e.field) == (str(study.root), "row")
    assert e.message == ("scnet/table1 row 9 is not scored by the evaluation server (its state: new); only rows "
                         "whose recipe has eval_split: test-dev2017 are")


def test_a_row_of_several_seeds_needs_one_named(tmp_path: Path) -> None:
    study, rc = _study(tmp_path / "study", uploads=("segm",), seeds=(0, 1))
    stats = _write(tmp_path / "stats.json", {"segm": NUMBERS})
    e = _refused(study, "scnet/table1:9", stats)
    assert e.message == "scnet/table1:9 trains with 2 seeds: name one, e.g. scnet/table1:9@0"
    import_stats(study, "scnet/table1:9@0", stats)
    assert study.paths.run(rc.key).server_stats.exists()


def test_an_unknown_row(tmp_path: Path) -> None:
    study, _ = _study(tmp_path / "study")
    e = _refused(study, "scnet/table1:4", _write(tmp_path / "stats.json", {}))
    assert (e.field, e.message) == ("--rows", "'scnet/table1:4' is not among the rows; rows: scnet/table1:9")


def test_local_server_refuses_a_full_scale_study(tmp_path: Path) -> None:
    """Before anything else is looked at: no annotations of COCO's test-dev exist to score against."""
    study, _ = _study(tmp_path / "study", scale="full")
    for wanted in ("9", "no such row"):
        with pytest.raises(UserError) as e:
            local_server(study, wanted)
        assert (e.value.where, e.value.field) == (str(study.root), "scale")
        assert e.value.message == ("COCO's test-dev annotations are withheld: upload the row's files to COCO's "
                                   "evaluation server; the local stand-in is for smoke studies")


def _withheld(study: Study) -> Path:
    return study.paths.data / SyntheticSpec().folder_name() / "withheld" / "instances_test.json"


def test_local_server_needs_the_withheld_annotations(tmp_path: Path) -> None:
    study, _ = _study(tmp_path / "study", scale="smoke")
    with pytest.raises(UserError) as e:
        local_server(study, "9")
    assert e.value.where == str(_withheld(study).resolve()) and e.value.message.startswith("missing: ")


def test_local_server_scores_the_uploads(tmp_path: Path) -> None:
    """A box on the withheld ground truth scores AP 1; an upload without detections scores 0, as the server
    scores it; sizes with no object are -1."""
    study, rc = _study(tmp_path / "study", scale="smoke", uploads=("segm",))
    box = [10.0, 10.0, 40.0, 40.0]  # 1,600 px: a medium object
    withheld = _withheld(study)
    withheld.parent.mkdir(parents=True)
    withheld.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "00000.png", "width": 64, "height": 64}],
        "categories": [{"id": 1, "name": "circle"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box, "area": 1600.0, "iscrowd": 0,
                         "segmentation": [[10, 10, 50, 10, 50, 50, 10, 50]]}]}))
    with zipfile.ZipFile(study.paths.run(rc.key).upload("bbox"), "w") as z:
        z.writestr("detections.json", json.dumps([{"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9}]))
    stats = local_server(study, "9")
    assert list(stats) == ["bbox", "segm"]
    assert stats["bbox"] == [1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0]
    assert stats["segm"] == [0.0] * 12
