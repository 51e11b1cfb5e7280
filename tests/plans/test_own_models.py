"""A model of one's own without forking sbrrepro: examples/own-model, a package installed (here into a
folder of its own on PYTHONPATH) whose zoo module and MMDetection plugin sbrrepro finds through the
entry-point groups `sbrrepro.zoo` and `sbrrepro.models`; its model trains at smoke scale, its registered
module in the training process too. A package whose entry point is broken is one clear error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

EXAMPLE = REPO / "examples" / "own-model"


def _cli(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "sbrrepro", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.training
def test_an_installed_packages_model_trains_with_its_own_module(tmp_path):
    pytest.importorskip("mmcv._ext")
    import torch

    source, site = tmp_path / "src", tmp_path / "site"
    shutil.copytree(EXAMPLE, source)  # pip builds in the source folder: not in the repository's
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True)
    study = tmp_path / "study"
    run = _cli("run", str(EXAMPLE / "plan.yaml"), "--smoke", "--epochs", "1", "--rows", "2", "--wait",
               "--study", str(study), site=site, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    status = _cli("status", "--study", str(study), site=site, cwd=tmp_path).stdout
    line = next(s for s in status.splitlines() if s.startswith("own-model/tempered") and " row 2 " in s)
    assert " done " in line, status
    key = next(word for word in line.split() if word.startswith("tempered_mask_rcnn-"))
    config = next((study / "configs").glob("own-model-tempered-row2-*.py")).read_text()
    assert "'TemperedBBoxHead'" in config and "custom_imports = {'imports': ['sbrrepro.models']" in config
    run_dir = study / "runs" / key
    checkpoint = max(run_dir.glob("epoch_*.pth"))
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert "roi_head.bbox_head.temperature" in weights  # the plugin's own parameter, trained


def test_a_broken_entry_point_is_one_clear_error(tmp_path):
    site = tmp_path / "site"
    info = site / "broken_zoo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-zoo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sbrrepro.zoo]\nbroken = no_such_module_anywhere\n")
    result = _cli("run", str(EXAMPLE / "plan.yaml"), "--smoke", "--dry-run", "--study", str(tmp_path / "s"),
                  site=site, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        "sbrrepro: error: entry point broken = no_such_module_anywhere (group sbrrepro.zoo): cannot be imported: "
        "ModuleNotFoundError: No module named 'no_such_module_anywhere'"]
    assert not (tmp_path / "s").exists()
