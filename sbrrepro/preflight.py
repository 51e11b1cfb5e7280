"""`sbrrepro preflight`: proof before GPU-hours. Each unique full-scale training of the plans takes a
few real training steps and one prediction, in a short job of its own on one device of the profile,
from its written config: the row's model at full width (COCO's 80 classes), its optimizer, its own
data pipeline at a given image size, on COCO's first images or, without COCO, on the embedded dataset
resized to that size. Findings (seconds per iteration, with and without the IoU recorder, inference
images per second, peak memory, checkpoint size, whether it fits the profile's GPU memory, or the
crash) go to the study's preflight.json: the cost estimate uses them, `run` refuses a training whose
preflight crashed or did not fit, and `status` and the report show them.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

from .errors import UserError
from .files import atomic_write
from .layout import StudyPaths
from .speed import _quiet_mmengine, device_name, peak_rss_GB
from .study_files import NUMBER, Number, read
from .zoo._parts import walk

if TYPE_CHECKING:
    from .cluster.profile import ClusterProfile
    from .rows import RowConfig

WARMUP = 2  # steps not timed: the first ones allocate and tune kernels
PREDICTIONS = 3  # images timed at inference, after one not timed


@dataclass(frozen=True)
class Finding:
    key: str
    rows: list[str]  # the rows (PLAN:N) that need this training
    device: str
    device_kind: str  # "cuda" or "cpu"
    image_size: list[int]  # [width, height] of every training image
    images_per_gpu: int
    steps: int
    data: str  # "coco" or "embedded"
    weights: str  # "pretrained" (staged) or "random"
    s_per_iter: float | None = None
    s_per_iter_without_recorder: float | None = None  # None: the model records no IoUs
    images_per_s: float | None = None  # inference, batch 1
    peak_memory_GB: float | None = None
    reserved_GB: float | None = None  # torch's reserved memory on a GPU
    memory_kind: str = ""
    checkpoint_MB: float | None = None  # weights and optimizer state, as a resumable checkpoint holds them
    gpu_memory_GB: float | None = None  # what it had to fit in
    fits: bool | None = None  # None on a CPU
    error: str | None = None
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.fits is not False

    def line(self) -> str:
        """One line for people: the finding, or the crash."""
        where = f"on {self.device} at {'x'.join(map(str, self.image_size)) or 'its own image size'}"
        if self.error is not None:
            return f"crashed {where}: {self.error}"
        recorder = ("" if self.s_per_iter_without_recorder is None
                    else f" ({self.s_per_iter_without_recorder:.2f} without the IoU recorder)")
        fits = "" if self.fits is None else f", {'fits' if self.fits else 'does NOT fit'}" + (
            "" if self.gpu_memory_GB is None else f" {self.gpu_memory_GB:.0f} GB")
        return (f"{self.s_per_iter:.2f} s/iter{recorder}, {self.images_per_s:.2f} img/s at inference, peak "
                f"{self.peak_memory_GB:.2f} GB ({self.memory_kind}){fits}, checkpoint {self.checkpoint_MB:.0f} MB "
                f"{where}, {self.data} data, {self.weights} weights")


_COUNT = Number(0, 1e9, integer=True)
_AMOUNT, _MAYBE = Number(0, 1e9), (Number(0, 1e9), None)  # seconds, images/s, GB, MB
_MEASURED = ("s_per_iter", "images_per_s", "peak_memory_GB", "checkpoint_MB")
_FOUND = {"key": str, "rows": [str, ...], "device": str, "device_kind": str, "image_size": [_COUNT, _COUNT],
          "images_per_gpu": _COUNT, "steps": _COUNT, "data": str, "weights": str, "memory_kind?": str,
          "s_per_iter_without_recorder?": _MAYBE, "reserved_GB?": _MAYBE, "gpu_memory_GB?": _MAYBE,
          "fits?": (bool, None), "finished?": NUMBER, **{f"{f}?": _MAYBE for f in _MEASURED}}
# a finding is a crash (of a job that may have died before it had an image size), or the measurements that
# `line` and the cost estimate read
_FINDING = ({**_FOUND, "error": str, "image_size": ([], [_COUNT, _COUNT])},
            {**_FOUND, "error?": None, **dict.fromkeys(_MEASURED, _AMOUNT)})


def _finding(data: dict[str, Any]) -> Finding:
    """A finding of `_FINDING`'s shape (the fields a Finding has: others are let be)."""
    return Finding(**{k: v for k, v in data.items() if k in Finding.__dataclass_fields__})


def load(paths: StudyPaths) -> dict[str, Finding]:
    """The study's findings by training key."""
    if not paths.preflight.exists():
        return {}
    found = read(paths.preflight, {str: _FINDING}, "`sbrrepro preflight`'s findings by training key",
                 "delete it (or the training's entry) and run `sbrrepro preflight` again")
    return {key: _finding(f) for key, f in found.items()}


def save(paths: StudyPaths, found: list[Finding]) -> None:
    known = {key: asdict(f) for key, f in load(paths).items()}
    known.update({f.key: asdict(f) for f in found})
    atomic_write(paths.preflight, json.dumps(known, indent=1))


def blocking(findings: dict[str, Finding], keys: list[str]) -> Finding | None:
    """The first of `keys` whose preflight crashed or did not fit."""
    return next((findings[k] for k in keys if k in findings and not findings[k].ok), None)


# ---- the job -------------------------------------------------------------------------------------
def _unwrap_recorder(model: dict) -> bool:
    """Replace each IoU-recording sampler by the sampler it wraps; True if there was one."""
    found = []

    def unwrap(d: dict) -> None:
        sampler = d.get("sampler")
        if isinstance(sampler, dict) and sampler.get("type") == "IoURecordingSampler":
            d["sampler"] = sampler["sampler"]
            found.append(d)
    walk(model, unwrap)
    return bool(found)


def _random_init(cfg: dict) -> None:
    """No pretrained weights: every `init_cfg` that loads a checkpoint is dropped."""
    def drop(d: dict) -> None:
        init = d.get("init_cfg")
        if isinstance(init, dict) and init.get("type") == "Pretrained":
            d["init_cfg"] = None
    walk(cfg["model"], drop)


def _own_size(dataset: dict) -> tuple[int, int]:
    """The largest image the dataset's pipeline makes (its Resize's scale, the larger of a range's)."""
    for step in dataset["pipeline"]:
        scale = step.get("scale") or step.get("scales")
        if scale is not None:
            sizes = [scale] if isinstance(scale[0], int) else scale
            return max((tuple(s) for s in sizes), key=lambda s: s[0] * s[1])
    raise ValueError("the training pipeline has no Resize to take the image size from: give one")


def _at_size(dataset: dict, size: tuple[int, int]) -> None:
    """Every image of the dataset's pipeline resized to exactly `size` (the largest the row's own
    keep-ratio resize makes, so memory is not underestimated)."""
    def resize(d: dict) -> None:
        if d.get("type") in ("Resize", "RandomResize", "RandomChoiceResize"):
            d.clear()
            d.update(type="Resize", scale=size, keep_ratio=False)
    for step in dataset["pipeline"]:
        resize(step)


def _on_embedded(dataset: dict, root: Path, role: str) -> None:
    """The dataset read from the embedded data (its classes named, the model keeps COCO's 80)."""
    from .configs import smoke_scale
    from .dataset import CLASSES

    scale = smoke_scale(root)
    ann, images = scale.files(role, role)
    prefix = {"img": images}
    if "seg" in dataset.get("data_prefix", {}):
        prefix["seg"] = scale.semantic_maps(role, role)
    dataset.update(data_root=str(root) + "/", ann_file=ann, data_prefix=prefix, metainfo=dict(classes=CLASSES))


def _samples(dataset_cfg: dict, count: int) -> list:
    from mmdet.registry import DATASETS

    dataset = DATASETS.build(dataset_cfg)
    return [dataset[i % len(dataset)] for i in range(count)]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _train_steps(cfg: dict, batches: list[list], device: str, warmup: int) -> tuple[float, Any, Any]:
    """Seconds per training step after the warm-up; the model and its optimizer."""
    from mmengine.dataset import pseudo_collate
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper

    from .configs import build_model

    model = build_model(cfg)
    model.init_weights()
    model = revert_sync_batchnorm(model).to(device).train()  # one process: no group for SyncBN to sync
    optim = build_optim_wrapper(model, cfg["optim_wrapper"])
    elapsed = 0.0
    for i, batch in enumerate(batches):
        _sync()
        start = time.perf_counter()
        model.train_step(pseudo_collate(batch), optim)
        _sync()
        if i >= warmup:
            elapsed += time.perf_counter() - start
    return elapsed / (len(batches) - warmup), model, optim


def _predict(model: Any, samples: list) -> float:
    """Inference images per second with batch 1, after one image not timed."""
    import torch
    from mmengine.dataset import pseudo_collate

    model.eval()
    elapsed = 0.0
    with torch.no_grad():
        for i, sample in enumerate(samples):
            _sync()
            start = time.perf_counter()
            model.test_step(pseudo_collate([sample]))
            _sync()
            if i:
                elapsed += time.perf_counter() - start
    return (len(samples) - 1) / elapsed


def _checkpoint_MB(model: Any, optim: Any) -> float:
    import torch

    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "optimizer": optim.state_dict()}, buffer)
    return buffer.tell() / 2**20


def measure(config: str, key: str, rows: list[str], size: tuple[int, int] | None, steps: int, embedded: str | None,
            random_init: bool, gpu_memory_GB: float | None, warmup: int = WARMUP,
            without_recorder: bool = True) -> Finding:
    """Preflight one training in this process (see the module's docstring); `without_recorder`: time
    the steps again without the IoU recorder."""
    import torch
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import sbrrepro.models  # noqa: F401  (the plugins' modules and transforms)

    register_all_modules()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    cfg = Config.fromfile(config).to_dict()
    if random_init:
        _random_init(cfg)
    train, test = cfg["train_dataloader"]["dataset"], cfg["test_dataloader"]["dataset"]
    size = size or _own_size(train)
    if embedded:
        _on_embedded(train, Path(embedded), "train")
        _on_embedded(test, Path(embedded), "val")
        test.pop("test_mode", None)
    for dataset in (train, test):
        _at_size(dataset, size)
    per_gpu = cfg["train_dataloader"]["batch_size"]
    base = dict(key=key, rows=rows, device=device_name(), device_kind=device, image_size=list(size),
                images_per_gpu=per_gpu, steps=steps, data="embedded" if embedded else "coco",
                weights="random" if random_init else "pretrained", gpu_memory_GB=gpu_memory_GB)
    if cuda and gpu_memory_GB is None:
        base["gpu_memory_GB"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    try:
        with contextlib.redirect_stdout(io.StringIO()), _quiet_mmengine():
            samples = _samples(train, (steps + warmup) * per_gpu)
            tests = _samples(test, PREDICTIONS + 1)
        batches = [samples[i * per_gpu:(i + 1) * per_gpu] for i in range(steps + warmup)]
        if not cuda:
            peak_rss_GB(reset=True)
        else:
            torch.cuda.reset_peak_memory_stats()
        with contextlib.redirect_stdout(io.StringIO()), _quiet_mmengine():
            s_iter, model, optim = _train_steps(cfg, batches, device, warmup)
        images_per_s = _predict(model, tests)
        if cuda:
            peak, reserved = torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30
            kind = "cuda max allocated"
        else:
            peak, reserved, kind = peak_rss_GB(), None, "process peak RSS"
        checkpoint = _checkpoint_MB(model, optim)
        del model, optim
        without = None
        if without_recorder and _unwrap_recorder(cfg["model"]):
            with contextlib.redirect_stdout(io.StringIO()), _quiet_mmengine():
                without, _, _ = _train_steps(cfg, batches, device, warmup)
        fits = reserved <= base["gpu_memory_GB"] if cuda else None
        return Finding(**base, s_per_iter=s_iter, s_per_iter_without_recorder=without, images_per_s=images_per_s,
                       peak_memory_GB=peak, reserved_GB=reserved, memory_kind=kind, checkpoint_MB=checkpoint,
                       fits=fits, finished=time.time())
    except Exception as e:  # noqa: BLE001  (the finding is the crash: any error of the model's)
        out_of_memory = isinstance(e, torch.cuda.OutOfMemoryError)
        last = traceback.extract_tb(e.__traceback__)[-1]
        where = f" ({Path(last.filename).name}:{last.lineno})"
        return Finding(**base, fits=False if out_of_memory else None, finished=time.time(),
                       error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{where}"[:300])


class PreflightJob(submitit.helpers.Checkpointable):
    """Picklable: measures one training and writes its finding to `out` (a requeued job measures again)."""

    def __init__(self, out: str, **measure_args: Any) -> None:
        self.out, self.measure_args = out, measure_args

    def __call__(self) -> dict[str, Any]:
        found = asdict(measure(**self.measure_args))
        atomic_write(Path(self.out), json.dumps(found, indent=1))
        return found


# ---- the command ---------------------------------------------------------------------------------
def embedded_data(study: Any) -> Path:
    """The embedded dataset, made in the study if it is not there yet: what a preflight trains on
    where there is no COCO."""
    from .dataset import ensure_dataset

    return ensure_dataset(study.paths.data)


def image_size(text: str | None) -> tuple[int, int] | None:
    """`--image-size WxH` as (width, height); None: each row's own largest."""
    try:
        size = None if text is None else tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        size = ()
    if size is not None and (len(size) != 2 or min(size) < 32):
        raise UserError("command line", "--image-size", f"{text!r}: give WIDTHxHEIGHT in pixels, each at least 32, "
                        "e.g. 1333x800")
    return size


def trainings(chosen: list[tuple[Any, RowConfig]]) -> dict[str, tuple[str, list[str]]]:
    """Each unique training of the chosen rows: its key -> its config and the rows that need it."""
    out: dict[str, tuple[str, list[str]]] = {}
    for _, rc in chosen:
        config, needed = out.get(rc.train_key, (str(rc.train_path), []))
        out[rc.train_key] = (config, [*needed, f"{rc.plan}:{rc.row}"])
    return out


def data(prepared: Any) -> tuple[str | None, str]:
    """What a preflight of `prepared` (see sbrrepro.prepare) trains on, and its description: COCO where
    the chosen rows' training files are there (None), else the embedded dataset, made in the study."""
    scale = prepared.scale
    if all((scale.data_root / scale.files("train", row.recipe["train_split"])[0]).exists()
           for row, _ in prepared.chosen):
        return None, "COCO"
    return str(embedded_data(prepared.study)), f"the embedded dataset (no COCO at {scale.data_root})"


def one_device(profile: ClusterProfile) -> ClusterProfile:
    """The cluster profile for one preflight job: one node, one task, one of its GPUs."""
    gpus = 1 if profile.gpus_per_node else profile.gpus_per_node
    return replace(profile, nodes=1, tasks_per_node=1, gpus_per_node=gpus)


def submit_and_wait(study: Any, trainings: dict[str, tuple[str, list[str]]], executor: Any,
                    poll_s: float = 2.0, **measure_args: Any) -> list[Finding]:
    """Preflight each training (key -> its config and the rows that need it) as one job of an array,
    wait for all, and record their findings in the study; a job that died without one is a crash."""
    from .cluster import CANCELLED, FAILED, FINISHED

    load(study.paths)  # the findings already recorded, which `save` keeps: a damaged file is refused before any job
    folder = study.paths.preflight_jobs / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True)
    keys = list(trainings)
    outs = {key: folder / f"{key}.json" for key in keys}
    jobs = [PreflightJob(str(outs[key]), config=trainings[key][0], key=key, rows=trainings[key][1], **measure_args)
            for key in keys]
    ids = dict(zip(keys, executor.submit_array(jobs, folder, "preflight")))
    while True:
        states = executor.states([(job_id, folder) for job_id in ids.values()])
        if all(s in (FINISHED, FAILED, CANCELLED) for s in states.values()):
            break
        time.sleep(poll_s)
    found = []
    for key in keys:
        if outs[key].exists():
            found.append(_finding(read(outs[key], _FINDING, "a preflight job's finding",
                                       "run `sbrrepro preflight` again for its rows")))
        else:
            logs = sorted(folder.glob(f"{ids[key]}*_log.err"))
            tail = logs[-1].read_text().strip().splitlines()[-1:] if logs else []
            found.append(Finding(key, trainings[key][1], "?", "?", list(measure_args["size"] or ()), 0,
                                 measure_args["steps"], "?", "?", finished=time.time(),
                                 error=f"the job ended without a finding ({states[ids[key]]}): "
                                       f"{tail[0] if tail else 'no log'}"))
    save(study.paths, found)
    return found
