"""What a job runs on its node: train one config with MMEngine's runner, then make sure the final
evaluation is in the work dir. Re-running the same job resumes from the last checkpoint; a job that
was killed after its last epoch only evaluates. Works the same on one CPU, one GPU, or several tasks
(local or SLURM), taking its distributed setting from submitit's job environment.
"""

from __future__ import annotations

import copy
import json
import os
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import submitit

from . import versions
from .files import atomic_write
from .layout import RunPaths
from .results import final_metrics
from .vocabulary import FRAMEWORK_KEY


def trainable(module: Any) -> int:
    """Trainable parameters, as the papers count them."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _distributed_env(job_id: str) -> bool:
    """Export torch.distributed's variables from the job environment; True when there are >1 tasks."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job: a plain single process
        return False
    if env.num_tasks <= 1:
        return False
    # A port per job: concurrent jobs sharing a node would collide on MMEngine's fixed 29500. Below
    # Linux's ephemeral range (32768-60999), where client sockets could already hold it.
    port = 20000 + zlib.crc32(job_id.encode()) % 12000
    os.environ.update(RANK=str(env.global_rank), LOCAL_RANK=str(env.local_rank),
                      WORLD_SIZE=str(env.num_tasks), MASTER_ADDR=env.hostnames[0], MASTER_PORT=str(port))
    return True


class TrainingJob(submitit.helpers.Checkpointable):
    """Picklable job: submitit runs it, and on preemption or time-out requeues it as it is
    (`Checkpointable`): the rerun resumes from MMEngine's last checkpoint in the work dir."""

    def __init__(self, config: str, work_dir: str) -> None:
        self.config, self.work_dir = config, work_dir

    def __call__(self) -> dict[str, Any]:
        run = RunPaths(Path(self.work_dir))
        run.root.mkdir(parents=True, exist_ok=True)
        run.started.touch()
        return train_and_evaluate(self.config, run)


def _runner(config: str, run: RunPaths, **settings: Any):
    """MMEngine's runner for `config` in the work dir `run`, distributed when the job has several tasks."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(config)  # imports sbrrepro.models: plugins and the checkpoint fix
    cfg.work_dir = str(run.root)
    cfg.update(settings)
    if cfg.get("test_evaluator", {}).get("format_only"):  # detections for the evaluation server, in the work dir
        cfg.test_evaluator.outfile_prefix = str(run.detections_prefix)
    job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getpid())
    distributed = _distributed_env(job_id)
    # As MMEngine scales the lr with the total batch, an iteration schedule is scaled with it here:
    # the images seen are the paper's whatever the number of processes (the written config and its
    # key keep the paper's schedule).
    cfg = scale_schedule(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    if distributed:
        cfg.launcher = "pytorch"
        if not torch.cuda.is_available():
            # MMEngine's launcher pins a CUDA device and gives DDP device ids: on CPUs, start gloo
            # here (MMEngine then skips its own set-up) and wrap the model without device ids.
            torch.distributed.init_process_group("gloo")
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", broadcast_buffers=False, device_ids=None)
    runner = Runner.from_cfg(cfg)
    if _rank() == 0:
        atomic_write(run.provenance, json.dumps(provenance(cfg, job_id), indent=1))
    return cfg, runner


def train_and_evaluate(config: str, run: RunPaths) -> dict[str, Any]:
    from mmengine import dist

    cfg, runner = _runner(config, run, resume=True)  # from the work dir's last_checkpoint if any
    runner.train()
    # an epoch schedule validates (and checkpoints) at epochs, an iteration schedule at iterations
    final, unit = (cfg.train_cfg.max_iters, "iters") if "max_iters" in cfg.train_cfg else (cfg.train_cfg.max_epochs,
                                                                                            "epochs")
    # Killed between the last checkpoint and the end of its evaluation? Only rank 0 writes the logs
    # that tell, and every rank must take part in the evaluation: rank 0 decides for all.
    missing = [final_metrics(run, final) is None]
    dist.broadcast_object_list(missing)
    if missing[0]:
        runner.val()
    metrics = final_metrics(run, final) or {}
    summary = {"metrics": metrics, unit: final, "trainable_params": trainable(runner.model),
               "finished": time.time()}
    if _rank() == 0:
        atomic_write(run.done, json.dumps(summary, indent=1))
    _leave_process_group()
    return summary


def _leave_process_group() -> None:
    """Every rank waits for the others, then leaves torch.distributed's group: a gloo group still alive
    when the interpreter exits can abort a rank ("terminate called without an active exception"), and
    SLURM then cancels the job's other tasks, failing a job whose every rank had finished."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()
        td.destroy_process_group()


class EvalJob(submitit.helpers.Checkpointable):
    """Evaluates the finished training in `train_dir` with the test-time settings of `config`
    (an evaluation-only row, e.g. other evaluation loops); CocoMetric's output goes to done.json."""

    def __init__(self, config: str, train_dir: str, work_dir: str) -> None:
        self.config, self.train_dir, self.work_dir = config, train_dir, work_dir

    def __call__(self) -> dict[str, Any]:
        training, run = RunPaths(Path(self.train_dir)), RunPaths(Path(self.work_dir))
        checkpoint = training.final_checkpoint()
        if checkpoint is None:
            raise RuntimeError(f"the training in {training.root} has not finished: nothing to evaluate")
        run.root.mkdir(parents=True, exist_ok=True)
        run.started.touch()
        cfg, runner = _runner(self.config, run, load_from=str(checkpoint), resume=False)
        metrics = runner.test()  # for the evaluation server: no metrics, the detections as files
        summary = {"metrics": {k: float(v) for k, v in metrics.items()}, "checkpoint": str(checkpoint),
                   "finished": time.time()}
        if _rank() == 0:
            if cfg.test_evaluator.get("format_only"):
                _zip_for_server(run, cfg.test_evaluator.metric)
            atomic_write(run.done, json.dumps(summary, indent=1))
        _leave_process_group()
        return summary


SERVER_NAME = "detections_test-dev2017_sbrrepro_results.json"  # as COCO's server wants the file named


def _zip_for_server(run: RunPaths, iou_types: list[str] | str) -> None:
    """One zip per IoU type holding CocoMetric's detections under the server's file name; each
    zip is complete before it appears (a killed job leaves none half-written)."""
    for iou_type in [iou_types] if isinstance(iou_types, str) else iou_types:
        partial = run.root / f".{run.upload(iou_type).name}.partial"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(run.detections(iou_type), SERVER_NAME)
        partial.replace(run.upload(iou_type))


def scale_schedule(cfg, world: int):
    """`cfg` as `world` processes train it: an iteration schedule (`IterBasedTrainLoop`) on another
    total batch than the paper's (`auto_scale_lr.base_batch_size`) has its iterations, lr steps,
    warm-up, validation and checkpoint intervals scaled by paper batch / total batch, so that it sees
    the paper's images (720k iterations of 2 images are 180k of 8); an epoch schedule already does, and
    is returned as it is. `cfg` is left unchanged; the scaled copy is returned."""
    batch = world * cfg.train_dataloader.batch_size
    paper = cfg.auto_scale_lr.base_batch_size
    if cfg.train_cfg.get("type") != "IterBasedTrainLoop" or batch == paper:
        return cfg
    cfg = copy.deepcopy(cfg)

    def scaled(n: int) -> int:
        return max(1, round(n * paper / batch))

    loop = cfg.train_cfg
    loop.max_iters = scaled(loop.max_iters)
    if "val_interval" in loop:
        loop.val_interval = scaled(loop.val_interval)
    for scheduler in cfg.param_scheduler:
        if scheduler.get("by_epoch", True):
            continue
        for field in ("begin", "end"):
            if scheduler.get(field):
                scheduler[field] = scaled(scheduler[field])
        if "milestones" in scheduler:
            scheduler.milestones = [scaled(m) for m in scheduler.milestones]
    checkpoint = cfg.default_hooks.get("checkpoint", {})
    if not checkpoint.get("by_epoch", True) and "interval" in checkpoint:
        checkpoint.interval = scaled(checkpoint.interval)
    return cfg


def schedule(cfg, world: int) -> dict[str, Any]:
    """The schedule a run trains (after `scale_schedule`), for its provenance: its length, lr steps,
    warm-up, validation and checkpoint intervals, in its unit, and the images it sees."""
    loop, batch = cfg.train_cfg, world * cfg.train_dataloader.batch_size
    by_iter = loop.get("type") == "IterBasedTrainLoop"
    warmup = next((s for s in cfg.param_scheduler if s.type == "LinearLR"), {})
    steps = next((s for s in cfg.param_scheduler if "milestones" in s), {})
    return {
        "unit": "iter" if by_iter else "epoch",
        "length": loop.max_iters if by_iter else loop.max_epochs,
        "lr_steps": list(steps.get("milestones", [])),
        "warmup_iters": warmup.get("end"),
        "val_interval": loop.get("val_interval"),
        "checkpoint_interval": cfg.default_hooks.get("checkpoint", {}).get("interval"),
        "images": loop.max_iters * batch if by_iter else None,  # an epoch schedule: epochs x the dataset
        # iterations scaled to the paper's images (see `scale_schedule`)
        "scaled": by_iter and batch != cfg.auto_scale_lr.base_batch_size,
    }


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def provenance(cfg, job_id: str) -> dict[str, Any]:
    """What this run was made with: library versions, the project's commit, devices, batch, the
    effective learning rate (MMEngine scales it linearly when the total batch differs from the
    paper's; such runs are flagged) and the schedule it trains (an iteration schedule scaled alike,
    `scale_schedule`)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_gpu = cfg.train_dataloader.batch_size
    paper_batch = cfg.auto_scale_lr.base_batch_size
    lr = cfg.optim_wrapper.optimizer.lr
    cuda = torch.cuda.is_available()
    return {
        "versions": versions.stack(),
        "sbrrepro_commit": versions.commit(),  # None on a node without git: the training goes on
        "job_id": job_id,
        "hosts": os.environ.get("SLURM_JOB_NODELIST") or os.uname().nodename,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "processes": world,
        "gpus": world if cuda else 0,
        "images_per_process": per_gpu,
        "batch": world * per_gpu,
        "paper_batch": paper_batch,
        "lr_config": lr,
        "lr_effective": lr * world * per_gpu / paper_batch,
        "lr_scaled": world * per_gpu != paper_batch,
        "schedule": schedule(cfg, world),
        "seed": cfg.randomness.seed,
        # the older MMDetection's model settings it was built with (None: MMDetection 3.3's defaults)
        FRAMEWORK_KEY: cfg[FRAMEWORK_KEY].to_dict() if FRAMEWORK_KEY in cfg else None,
        # the classes it learns (None: the dataset's own, COCO's 80)
        "classes": list(cfg.train_dataloader.dataset.get("metainfo", {}).get("classes", ())) or None,
        "started": time.time(),
    }
