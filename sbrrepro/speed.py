"""`sbrrepro speed`: inference images per second with batch 1 on one device (the papers' Speed
column) and the peak memory, for a row's config on whatever device this machine has.

The model carries its trained weights when the study has them, else its initial ones (flagged):
speed depends on the architecture and on how many detections reach the mask head, so a trained
model is the honest measure. Measured over the first images of the row's evaluation set after a
warm-up; the figures go to the study's speed.json, where `collect` finds them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .configs import build_model
from .files import atomic_write
from .layout import StudyPaths
from .rows import RowConfig
from .study import Study
from .study_files import Number, read


@dataclass(frozen=True)
class Speed:
    images_per_s: float
    images: int
    peak_memory_GB: float
    memory_kind: str  # "cuda max allocated" or "process peak RSS" (the row's own, see peak_rss_GB)
    device: str
    trained: bool

    def line(self) -> str:
        weights = "trained" if self.trained else "untrained (initial weights)"
        return (f"{self.images_per_s:7.2f} img/s  peak {self.peak_memory_GB:.2f} GB ({self.memory_kind})  {weights}  "
                f"on {self.device}")


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_rss_GB(reset: bool = False) -> float:
    """The process's peak resident memory (Linux's VmHWM); `reset` restarts it from the current
    RSS, so that rows measured one after another in one process each get a peak of their own."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 2**20


@contextlib.contextmanager
def _quiet_mmengine() -> Iterator[None]:
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def measure(config: Path, checkpoint: Path | None, images: int = 20, warmup: int = 3) -> Speed:
    import torch
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import load_checkpoint

    cfg = Config.fromfile(str(config))
    cuda = torch.cuda.is_available()
    if not cuda:
        peak_rss_GB(reset=True)
    # Building prints pages of init and COCO-index chatter: keep the command's output to its figures.
    with contextlib.redirect_stdout(io.StringIO()), _quiet_mmengine():
        model = build_model(cfg.to_dict())
        model.init_weights()
        if checkpoint:
            load_checkpoint(model, str(checkpoint), map_location="cpu")
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        samples = [dataset[i % len(dataset)] for i in range(warmup + images)]  # decoding is not timed
    model = model.to("cuda" if cuda else "cpu").eval()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    elapsed = 0.0
    with torch.no_grad():
        for i, sample in enumerate(samples):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.test_step(pseudo_collate([sample]))
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                elapsed += time.perf_counter() - start
    if cuda:
        memory, kind = torch.cuda.max_memory_allocated() / 2**30, "cuda max allocated"
    else:
        memory, kind = peak_rss_GB(), "process peak RSS"
    return Speed(images / elapsed, images, memory, kind, device_name(), checkpoint is not None)


def record(paths: StudyPaths, key: str, speed: Speed) -> None:
    known = recorded(paths)
    known[key] = asdict(speed)
    atomic_write(paths.speed, json.dumps(known, indent=1))


def recorded(paths: StudyPaths) -> dict[str, dict[str, Any]]:
    """The speeds measured, by row key (what `collect` reads of each is checked)."""
    if not paths.speed.exists():
        return {}
    return read(paths.speed, {str: {"images_per_s": Number(1e-9, 1e9), "peak_memory_GB": Number(0, 1e9)}},
                "`sbrrepro speed`'s figures by row key",
                "delete it (or the row's entry) and run `sbrrepro speed` again")


def measure_rows(study: Study, rows: list[RowConfig], images: int) -> Iterator[tuple[RowConfig, Speed]]:
    """Measure each row on its training's final weights where the study has them, recording each
    figure as soon as it is taken."""
    for rc in rows:
        speed = measure(rc.path, study.paths.run(rc.train_key).final_checkpoint(), images)
        record(study.paths, rc.key, speed)
        yield rc, speed
