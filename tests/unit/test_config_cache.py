"""sbrrepro.config_cache: a row's inputs digested, a config found again only while its file holds the
text it was written with, entries saved once changed, and a cache of another sbrrepro or MMDetection, or
damaged, ignored (and written afresh) rather than trusted or fatal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sbrrepro import versions
from sbrrepro.config_cache import ConfigCache, digest
from sbrrepro.configs import smoke_scale
from sbrrepro.plan import Row, load_plan
from tests.helpers import PLANS

KEY, TEXT = "mask_rcnn-e69ac97ff710", "model = dict(type='MaskRCNN')\n"


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return load_plan(PLANS / "sbr-cnn" / "table4.yaml").rows


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "study" / "configs" / ".cache.json"


def _config(tmp_path: Path, text: str = TEXT) -> Path:
    path = tmp_path / "study" / "configs" / f"row1-{KEY.rsplit('-', 1)[1]}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _saved(cache_path: Path, tmp_path: Path) -> tuple[str, Path]:
    """A cache file holding one entry for a config file written with TEXT: (its inputs, the config)."""
    config = _config(tmp_path)
    cache = ConfigCache(cache_path)
    cache.remember("inputs-1", KEY, TEXT)
    cache.save()
    return "inputs-1", config


def test_digest() -> None:
    assert digest("abc") == digest(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_inputs_differ_by_each_input(rows: list[Row], cache_path: Path, tmp_path: Path) -> None:
    cache = ConfigCache(cache_path)
    scale = smoke_scale(tmp_path / "data")
    base = cache.inputs("sbr-cnn/table4", rows[1], scale, "")
    assert base == cache.inputs("sbr-cnn/table4", rows[1], smoke_scale(tmp_path / "data"), "")  # equal inputs
    others = [cache.inputs("sbr-cnn/table3", rows[1], scale, ""), cache.inputs("sbr-cnn/table4", rows[2], scale, ""),
              cache.inputs("sbr-cnn/table4", rows[1], scale, "-train"),
              cache.inputs("sbr-cnn/table4", rows[1], dataclasses.replace(scale, epochs=2), ""),
              cache.inputs("sbr-cnn/table4", rows[1].seeded(1), scale, "")]
    assert len({base, *others}) == 6 and all(len(d) == 64 for d in others)


def test_a_row_that_reads_a_file_is_never_cached(rows: list[Row], cache_path: Path, tmp_path: Path) -> None:
    """A `base` config's content is no input the cache sees: such a row is built every time."""
    base = tmp_path / "my_config.py"
    base.write_text("model = dict()\n")
    row = dataclasses.replace(rows[0], options={"base": str(base)})
    scale = smoke_scale(tmp_path / "data")
    assert ConfigCache(cache_path).inputs("mine/t1", row, scale, "") is None
    missing = dataclasses.replace(rows[0], options={"base": str(tmp_path / "gone.py"), "x": "relative.py"})
    assert ConfigCache(cache_path).inputs("mine/t1", missing, scale, "") is not None


def test_no_path_remembers_nothing(rows: list[Row], tmp_path: Path) -> None:
    """ConfigCache(None): no inputs digested, so nothing looked up, remembered or saved (every row built)."""
    cache = ConfigCache(None)
    inputs = cache.inputs("sbr-cnn/table4", rows[0], smoke_scale(tmp_path / "data"), "")
    assert inputs is None
    config = _config(tmp_path)
    cache.remember(inputs, KEY, TEXT)
    cache.save()
    assert cache.entries == {} and cache.lookup(inputs, lambda key: config) is None
    assert not any(tmp_path.rglob("*.json"))


def test_remembered_entry_found_while_the_file_holds_its_text(cache_path: Path, tmp_path: Path) -> None:
    inputs, config = _saved(cache_path, tmp_path)
    cache = ConfigCache(cache_path)
    asked = []
    assert cache.lookup(inputs, lambda key: asked.append(key) or config) == (config, KEY)
    assert asked == [KEY] and cache.hits == 1
    assert cache.lookup("other inputs", lambda key: config) is None
    assert cache.lookup(None, lambda key: config) is None and cache.hits == 1

    config.write_text(TEXT + "# edited\n")
    assert cache.lookup(inputs, lambda key: config) is None
    config.unlink()
    assert cache.lookup(inputs, lambda key: config) is None
    config.mkdir()  # a folder in its place
    assert cache.lookup(inputs, lambda key: config) is None
    assert cache.hits == 1


def test_saved_file(cache_path: Path, tmp_path: Path) -> None:
    _saved(cache_path, tmp_path)
    saved = json.loads(cache_path.read_text())
    assert saved == {"stamp": f"sbrrepro {versions.source_digest()}; mmdet {versions.installed('mmdet')}",
                     "entries": {"inputs-1": [KEY, digest(TEXT)]}}


def test_saved_only_when_changed(cache_path: Path, tmp_path: Path) -> None:
    _saved(cache_path, tmp_path)
    cache = ConfigCache(cache_path)
    cache.remember("inputs-1", KEY, TEXT)  # what it holds already
    cache_path.unlink()
    cache.save()
    assert not cache_path.exists()
    cache.remember("inputs-1", KEY, TEXT + "\n")  # the same inputs, another text
    cache.save()
    assert json.loads(cache_path.read_text())["entries"] == {"inputs-1": [KEY, digest(TEXT + "\n")]}
    cache_path.unlink()
    cache.save()  # saved: nothing changed since
    assert not cache_path.exists()


def test_another_stamp_starts_afresh(cache_path: Path, tmp_path: Path) -> None:
    """A cache filled by other sbrrepro source or another MMDetection is ignored, and replaced when saved."""
    inputs, config = _saved(cache_path, tmp_path)
    saved = json.loads(cache_path.read_text())
    cache_path.write_text(json.dumps({**saved, "stamp": "sbrrepro 0000; mmdet 3.2.0"}))
    cache = ConfigCache(cache_path)
    assert cache.entries == {} and cache.lookup(inputs, lambda key: config) is None
    cache.remember("inputs-2", KEY, TEXT)
    cache.save()
    assert json.loads(cache_path.read_text()) == {"stamp": saved["stamp"], "entries": {"inputs-2": [KEY, digest(TEXT)]}}


@pytest.mark.parametrize("damage", [
    lambda p: p.write_text('{"stamp": "sbrrepro'),  # cut short by a full disk
    lambda p: p.write_bytes(b"\xff\xfe\x00"),  # not UTF-8
    lambda p: p.write_text("[]"),
    lambda p: p.write_text(json.dumps({"stamp": 3, "entries": {}})),
    lambda p: p.write_text(json.dumps({"entries": {}})),
    lambda p: p.write_text(json.dumps({"stamp": "s", "entries": {"i": [KEY]}})),
    lambda p: p.write_text(json.dumps({"stamp": "s", "entries": {"i": ["no key", "0" * 64]}})),
    lambda p: p.write_text(json.dumps({"stamp": "s", "entries": {"i": [KEY, "F" * 64]}})),
], ids=["cut", "not-utf8", "list", "stamp-number", "no-stamp", "one-item", "bad-key", "bad-digest"])
def test_damaged_cache_ignored_and_rewritten(cache_path: Path, tmp_path: Path, damage) -> None:
    inputs, config = _saved(cache_path, tmp_path)
    damage(cache_path)
    cache = ConfigCache(cache_path)
    assert cache.entries == {} and cache.lookup(inputs, lambda key: config) is None
    cache.remember(inputs, KEY, TEXT)
    cache.save()
    assert ConfigCache(cache_path).lookup(inputs, lambda key: config) == (config, KEY)


def test_damaged_entry_with_the_stamp_ignored(cache_path: Path, tmp_path: Path) -> None:
    """The shape is checked before the stamp: an entry edited by hand under the right stamp is no entry."""
    inputs, config = _saved(cache_path, tmp_path)
    saved = json.loads(cache_path.read_text())
    cache_path.write_text(json.dumps({**saved, "entries": {inputs: [KEY, "not a digest"]}}))
    assert ConfigCache(cache_path).entries == {}


def test_a_folder_in_its_place(cache_path: Path, tmp_path: Path) -> None:
    """Neither read nor written: the configs are built and written, only not remembered."""
    cache_path.mkdir(parents=True)
    cache = ConfigCache(cache_path)
    assert cache.entries == {}
    cache.remember("inputs-1", KEY, TEXT)
    cache.save()  # no error
    assert cache_path.is_dir()
