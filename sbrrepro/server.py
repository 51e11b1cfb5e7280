"""Rows scored by COCO's evaluation server (test-dev): the stats it returns, imported per row, and a
local stand-in for it on the embedded dataset, whose test split's annotations are withheld from the
jobs as test-dev's are.

The server's stats, as sbrrepro imports them: a JSON object with, per IoU type the row uploaded
('bbox', 'segm'), the twelve numbers of COCOeval's summary in its order (AP, AP50, AP75, APs, APm,
APl, AR1, AR10, AR100, ARs, ARm, ARl), as fractions; -1 where the split has no such objects.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from . import jobs
from .datasets import embedded
from .errors import UserError
from .files import atomic_write
from .layout import RunPaths
from .reader import INPUT_BYTES, parse_json, read_json
from .rows import RowConfig
from .study import Study

STATS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l", "AR_1", "AR_10", "AR_100", "AR_s", "AR_m", "AR_l")


def _iou_type(upload: Path) -> str:
    return upload.stem.removeprefix("upload_")


def _awaiting(study: Study, wanted: str) -> tuple[RowConfig, RunPaths]:
    """The row named `wanted` (N or PLAN:N), which must have written files for the server."""
    found = study.select_rows([wanted])
    if len(found) > 1:
        raise UserError(str(study.root), "row", f"{wanted} trains with {len(found)} seeds: name one, e.g. "
                        f"{wanted}@{found[0][1].seed}")
    ((_, rc),) = found
    run = study.paths.run(rc.key)
    (state,) = jobs.states(study, [rc])
    if not run.uploads():
        raise UserError(str(study.root), "row", f"{rc.plan} row {rc.row} is not scored by the evaluation server "
                        f"(its state: {state.state}); only rows whose recipe has eval_split: test-dev2017 are")
    return rc, run


def import_stats(study: Study, wanted: str, stats_file: Path) -> dict[str, float]:
    """Store the server's stats for a row (replacing earlier ones): `collect` then reports them."""
    rc, run = _awaiting(study, wanted)
    where = str(stats_file)
    try:
        data = read_json(stats_file, INPUT_BYTES, "JSON {\"segm\": [12 numbers], ...}: COCOeval's summary per IoU type")
    except OSError as e:
        raise UserError(where, None, f"cannot read the stats: {e.strerror}") from None
    wanted_types = [_iou_type(u) for u in run.uploads()]
    if not isinstance(data, dict):
        raise UserError(where, None, f"expected a mapping of IoU type to COCOeval's 12 numbers, got "
                        f"{type(data).__name__}")
    out = {}
    for iou in wanted_types:
        values = data.get(iou)
        if values is None:
            raise UserError(where, iou, f"missing: {rc.plan} row {rc.row} uploaded {', '.join(wanted_types)}")
        if (not isinstance(values, list) or len(values) != len(STATS)
                or not all(type(v) in (int, float) and (v == -1 or 0 <= v <= 1) for v in values)):  # no bool
            raise UserError(where, iou, f"expected COCOeval's {len(STATS)} numbers ({', '.join(STATS)}) as "
                            f"fractions in [0, 1] (or -1), got {values!r}")
        out |= {f"coco/{iou}_{name}": float(v) for name, v in zip(STATS, values)}
    atomic_write(run.server_stats, json.dumps(out, indent=1))
    return out


def local_server(study: Study, wanted: str) -> dict[str, list[float]]:
    """What the evaluation server would return for a row of a smoke study, computed by pycocotools
    from the withheld annotations of the test split of the study's embedded dataset."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from .dataset import SyntheticSpec  # numpy and pycocotools: not for `import-stats`

    if study.scale != "smoke":
        raise UserError(str(study.root), "scale", "COCO's test-dev annotations are withheld: upload the row's "
                        "files to COCO's evaluation server; the local stand-in is for smoke studies")
    _, run = _awaiting(study, wanted)
    data = embedded((study.paths.data / SyntheticSpec().folder_name()).resolve())
    withheld = data.root / str(data.withheld)
    if not withheld.exists():
        raise UserError(str(withheld), None, "missing: the local stand-in scores the embedded dataset's test "
                        "split, whose annotations it withholds there")
    truth = COCO(str(withheld))
    out: dict[str, list[float]] = {}
    for upload in run.uploads():
        with zipfile.ZipFile(upload) as z:
            (name,) = z.namelist()
            detections: list[dict[str, Any]] = parse_json(z.read(name), f"{upload}: {name}")
        iou = _iou_type(upload)
        if not detections:  # pycocotools cannot load an empty result; the server scores it 0
            out[iou] = [0.0] * len(STATS)
            continue
        evaluation = COCOeval(truth, truth.loadRes(detections), iou)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        out[iou] = [round(float(v), 6) for v in evaluation.stats]
    return out
