"""sbrrepro.speed, without timing a model: a speed's line, the study's speed.json as recorded and read
back (its checks included), the process's peak memory that each row restarts, and the device's name."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from sbrrepro.errors import UserError
from sbrrepro.layout import StudyPaths
from sbrrepro.speed import Speed, device_name, peak_rss_GB, record, recorded

FIX = "delete it (or the row's entry) and run `sbrrepro speed` again"


def test_line_of_a_trained_model_on_a_gpu() -> None:
    speed = Speed(12.345, 20, 2.5, "cuda max allocated", "NVIDIA A100-SXM4-40GB", True)
    assert speed.line() == "  12.35 img/s  peak 2.50 GB (cuda max allocated)  trained  on NVIDIA A100-SXM4-40GB"


def test_line_of_initial_weights_says_so() -> None:
    speed = Speed(0.5, 3, 1.234, "process peak RSS", "CPU (x86_64, 2 threads)", False)
    assert speed.line() == ("   0.50 img/s  peak 1.23 GB (process peak RSS)  untrained (initial weights)  "
                            "on CPU (x86_64, 2 threads)")


def test_nothing_recorded(tmp_path: Path) -> None:
    assert recorded(StudyPaths(tmp_path / "study")) == {}


def test_recorded_per_row_key(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "study")
    first = Speed(9.5, 50, 2.5, "cuda max allocated", "NVIDIA A100", True)
    record(paths, "r3_cnn-51e1679df251", first)
    record(paths, "mask_rcnn-e69ac97ff710", Speed(1.0, 5, 0.5, "process peak RSS", "CPU", False))
    again = Speed(10.5, 50, 2.4, "cuda max allocated", "NVIDIA H100", True)
    record(paths, "r3_cnn-51e1679df251", again)  # measured again: replaced
    assert recorded(paths) == {"r3_cnn-51e1679df251": asdict(again),
                               "mask_rcnn-e69ac97ff710": asdict(Speed(1.0, 5, 0.5, "process peak RSS", "CPU", False))}
    assert Speed(**recorded(paths)["r3_cnn-51e1679df251"]) == again
    assert not list(paths.root.glob(".*tmp*"))  # written whole, no temporary left


@pytest.mark.parametrize("entry, field, said", [
    ({"images_per_s": 0, "peak_memory_GB": 1}, "k.images_per_s", "is 0, not a finite number, at least 1e-09"),
    ({"images_per_s": 2.0, "peak_memory_GB": -1}, "k.peak_memory_GB", "is -1, not a finite number, at least 0"),
    ({"images_per_s": "fast", "peak_memory_GB": 1}, "k.images_per_s", "is 'fast', not a finite number"),
    ({"peak_memory_GB": 1}, "k.images_per_s", "is missing"),
    ([9.5], "k", "is [9.5], not an object"),
])
def test_damaged_speed_file(tmp_path: Path, entry, field: str, said: str) -> None:
    paths = StudyPaths(tmp_path / "study")
    paths.root.mkdir()
    paths.speed.write_text(json.dumps({"k": entry}))
    with pytest.raises(UserError) as e:
        recorded(paths)
    assert (e.value.where, e.value.field) == (str(paths.speed), field)
    assert e.value.message.startswith(said) and e.value.message.endswith(FIX)


def test_speed_file_cut_short(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "study")
    paths.root.mkdir()
    paths.speed.write_text('{"k": {"images_per_s": 9')
    with pytest.raises(UserError, match=f"not valid JSON.*{re.escape(FIX)}"):
        recorded(paths)


def test_peak_rss_restarts_per_row() -> None:
    """The peak of a row measured after a larger one is its own, not the larger one's."""
    base = peak_rss_GB(reset=True)
    block = b"x" * (96 * 2**20)  # touched: resident
    assert peak_rss_GB() >= base + 0.08
    del block
    assert peak_rss_GB() >= base + 0.08  # a peak stays until reset
    assert peak_rss_GB(reset=True) < base + 0.05


def test_device_name() -> None:
    name = device_name()
    if torch.cuda.is_available():
        assert name == torch.cuda.get_device_name(0)
    else:
        assert name.startswith("CPU (") and name.endswith(f", {torch.get_num_threads()} threads)")
