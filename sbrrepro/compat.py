"""Fixes for the pinned stack, applied by sbrrepro itself."""

from __future__ import annotations

import os.path as osp

import torch


def _load_local(filename: str, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    # mmengine 0.10.7 checkpoints pickle its own objects (HistoryBuffer, numpy scalars); torch >= 2.6
    # refuses them by default, so resume and load_from fail. These are checkpoints we wrote.
    return torch.load(filename, map_location=map_location, weights_only=False)


def allow_own_checkpoints() -> None:
    """Re-register mmengine's loader for local paths (the scheme with no prefix)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", force=True)(_load_local)
