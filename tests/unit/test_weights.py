"""The pretrained weights are staged on the submitting machine: found in the weights cache or torch's,
else fetched (here from file:// sources: these tests never touch a network), hash-checked, and loaded
by the written configs from their local files with the keys unchanged."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sbrrepro import weights
from sbrrepro.configs import full_scale, keyed_config
from sbrrepro.errors import UserError
from sbrrepro.plan import load_plan
from sbrrepro.prepare import Request, prepare
from tests.helpers import REPO

TABLE2 = REPO / "plans" / "sbr-cnn" / "table2.yaml"
RESNET50 = "torchvision://resnet50"
GOLDEN = json.loads((REPO / "tests" / "golden_keys.json").read_text())["sbr-cnn/table2"]["full"]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Empty caches (torch's, MMEngine's, the data checks') and no network: a download from anything
    but a file:// URL fails."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.ENV, raising=False)
    real = urllib.request.urlopen

    def urlopen(request, *args, **kwargs):
        if not request.full_url.startswith("file://"):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def mirror(tmp_path: Path, monkeypatch, content: bytes = b"fake resnet50 weights", name: str | None = None) -> bytes:
    """resnet50's checkpoint served from a file:// mirror (named by its hash as torch hub's files are)."""
    name = name or f"resnet50-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    (tmp_path / "mirror").mkdir(exist_ok=True)
    (tmp_path / "mirror" / name).write_bytes(content)
    real = weights.source
    monkeypatch.setattr(weights, "source", lambda url: (tmp_path / "mirror" / name).as_uri() if url == RESNET50
                        else real(url))
    return content


def test_the_checkpoints_a_config_loads_are_found_and_replaced():
    key, cfg = keyed_config(load_plan(TABLE2).row(1), full_scale(Path("/data/coco")))
    assert weights.urls(cfg) == [RESNET50]
    assert weights.source(RESNET50) == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert weights.source("open-mmlab://detectron2/resnet50_caffe").endswith("/resnet50_msra-5891d200.pth")
    local = {RESNET50: Path("/w/resnet50.pth")}
    assert weights.placed(cfg, local)["model"]["backbone"]["init_cfg"]["checkpoint"] == "/w/resnet50.pth"
    assert weights.urls(weights.placed(cfg, local)) == []
    assert cfg["model"]["backbone"]["init_cfg"]["checkpoint"] == RESNET50  # not changed in place


def test_a_checkpoint_is_fetched_into_the_cache_with_its_hash_checked(tmp_path, monkeypatch):
    content = mirror(tmp_path, monkeypatch)
    cache = tmp_path / "weights"
    assert weights.stage([RESNET50], cache, fetch=False) == {RESNET50: cache / f"resnet50-{_hash(content)}.pth"}
    assert not cache.exists(), "without fetch nothing is downloaded"
    (local,) = weights.stage([RESNET50], cache, fetch=True).values()
    assert local.read_bytes() == content and [p.name for p in cache.iterdir()] == [local.name]


def test_a_checkpoint_whose_hash_is_not_its_names_is_refused_and_not_kept(tmp_path, monkeypatch):
    mirror(tmp_path, monkeypatch, name="resnet50-0676ba61.pth")
    cache = tmp_path / "study" / "weights"
    with pytest.raises(UserError) as e:
        weights.stage([RESNET50], cache, fetch=True)
    assert len(str(e.value).splitlines()) == 1 and str(e.value).startswith(RESNET50)
    assert "0676ba61" in str(e.value) and "not kept" in str(e.value)
    assert not (tmp_path / "study").exists(), "nothing left: no file, no folder made for it"


def test_a_checkpoint_in_torchs_cache_is_used_without_fetching(tmp_path):
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet50-0676ba61.pth").write_bytes(b"downloaded by MMEngine before")
    cache = tmp_path / "weights"
    assert weights.stage([RESNET50], cache, fetch=True) == {RESNET50: hub / "resnet50-0676ba61.pth"}
    assert not cache.exists()


def test_no_network_and_no_cached_file_is_one_error_naming_the_url_and_the_folder(tmp_path):
    cache = tmp_path / "study" / "weights"
    with pytest.raises(UserError) as e:
        weights.stage([RESNET50], cache, fetch=True)
    message = str(e.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{RESNET50}:")
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message and str(cache) in message
    assert "$SBRREPRO_WEIGHTS" in message and "name resolution" in message
    assert not (tmp_path / "study").exists()


def test_the_written_configs_load_the_staged_files_with_their_keys_unchanged(tmp_path, monkeypatch):
    """A dry run fetches nothing but writes the configs `run` writes; staging then fetches into the
    folder they name; moving the weights cache rewrites them; the keys are the golden ones throughout."""
    study = tmp_path / "study"

    def run(**kwargs):
        prepared = prepare(Request([str(TABLE2)], study, data_root=str(tmp_path / "coco"), dry_run=True, **kwargs))
        keys = {str(rc.row): [rc.key, rc.train_key] for _, rc in prepared.rows}
        assert keys == GOLDEN
        return prepared, prepared.rows[0][1].path.read_text()

    local = study.resolve() / "weights" / "resnet50-0676ba61.pth"
    dry, text = run()
    assert dry.weights == {RESNET50: local} and not local.exists(), "a dry run fetches nothing"
    assert f"'checkpoint': '{local}'" in text and RESNET50 not in text

    content = mirror(tmp_path, monkeypatch)  # named by its own hash: another file, so the configs are rewritten
    staged, again = run(fetch_weights=True)
    local = study.resolve() / "weights" / f"resnet50-{_hash(content)}.pth"
    assert staged.weights == {RESNET50: local} and local.read_bytes() == content
    assert f"'checkpoint': '{local}'" in again
    assert run()[1] == again, "a dry run after staging keeps the local file"

    monkeypatch.setenv(weights.ENV, str(tmp_path / "shared"))
    _, moved = run()
    assert f"'checkpoint': '{tmp_path.resolve() / 'shared' / local.name}'" in moved, "a stale config is not served"
    _, profile = run(weights=str(tmp_path / "profile"))  # a cluster profile's folder comes first
    assert f"'checkpoint': '{tmp_path.resolve() / 'profile' / local.name}'" in profile


def test_run_offline_without_the_weights_is_exit_2_and_writes_nothing(tmp_path, capsys):
    """The data is good (a dataset profile at full scale), the weights cannot be fetched: one line, no study."""
    from sbrrepro.cli import main
    from tests.unit.test_datasets import make_dataset

    profile = make_dataset(tmp_path / "data")
    study = tmp_path / "study"
    assert main(["run", str(REPO / "plans" / "sbr-cnn" / "table3.yaml"), "--dataset", str(profile),
                 "--study", str(study)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"fetching {RESNET50}") and len(err) == 2, err
    assert err[1].startswith(f"sbrrepro: error: {RESNET50}: cannot fetch") and str(study / "weights") in err[1]
    assert not study.exists()


def test_smoke_runs_stage_nothing(tmp_path):
    prepared = prepare(Request([str(TABLE2)], tmp_path / "study", smoke=True, dry_run=True))
    assert prepared.weights == {}
    assert all("://" not in rc.path.read_text() for _, rc in prepared.rows), "nothing to load, nothing to fetch"


def _hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:8]
