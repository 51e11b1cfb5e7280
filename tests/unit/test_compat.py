"""sbrrepro.compat: the checkpoints MMEngine writes (its own objects pickled) load again for resume and
load_from under torch's weights-only default, through mmengine's loader of local paths, which sbrrepro
replaces; the other schemes keep theirs."""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from sbrrepro import compat


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint as MMEngine 0.10.7 writes one: a state dict, and a message hub with its own objects."""
    buffer = HistoryBuffer()
    buffer.update(0.5)
    path = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "meta": {"epoch": 1, "loss": np.float64(0.25)},
                "message_hub": {"log_scalars": {"loss": buffer}}}, path)
    return path


@pytest.fixture
def loaders(monkeypatch) -> None:
    """mmengine's registry of loaders restored after the test."""
    monkeypatch.setattr(CheckpointLoader, "_schemes", OrderedDict(CheckpointLoader._schemes))


def test_torch_refuses_it_by_default(checkpoint: Path) -> None:
    """What the fix is for: torch >= 2.6 loads weights only, and refuses MMEngine's objects."""
    with pytest.raises(pickle.UnpicklingError):
        torch.load(checkpoint)


def test_load_local_reads_our_checkpoint(checkpoint: Path) -> None:
    loaded = compat._load_local(str(checkpoint), map_location="cpu")
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    assert loaded["meta"]["loss"] == 0.25 and isinstance(loaded["message_hub"]["log_scalars"]["loss"], HistoryBuffer)


def test_load_local_expands_the_home_folder(checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(checkpoint.parent))
    assert compat._load_local("~/epoch_1.pth")["meta"]["epoch"] == 1


@pytest.mark.parametrize("name", ["missing.pth", ""])
def test_load_local_missing_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name  # "": a folder, no file
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(path))} can not be found\\.$"):
        compat._load_local(str(path))


def test_allow_own_checkpoints_routes_local_paths_only(checkpoint: Path, loaders) -> None:
    compat.allow_own_checkpoints()
    assert CheckpointLoader._get_checkpoint_loader(str(checkpoint)) is compat._load_local
    assert CheckpointLoader._get_checkpoint_loader("relative/epoch_1.pth") is compat._load_local
    for url in ("https://download.openmmlab.com/x.pth", "torchvision://resnet50", "open-mmlab://resnet50_v1c"):
        assert CheckpointLoader._get_checkpoint_loader(url) is not compat._load_local, url
    loaded = CheckpointLoader.load_checkpoint(str(checkpoint), map_location="cpu", logger="silent")
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))


def test_allow_own_checkpoints_twice(loaders) -> None:
    """Registering again (each process of a job imports the plugins) replaces, never raises."""
    compat.allow_own_checkpoints()
    compat.allow_own_checkpoints()
    assert list(CheckpointLoader._schemes).count("") == 1
