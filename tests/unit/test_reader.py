"""sbrrepro.reader: bad input, careless or hostile, is one line naming the file (exit 2, no traceback,
nothing written) within seconds and without eating memory: a binary file for a plan, a profile or an
annotation file, nesting and alias bombs in a plan, a FIFO, an oversized file, an image whose header
claims 400 megapixels. And nothing in a plan but a `base:` config file is ever executed."""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path

import pytest

from sbrrepro import datacheck, reader
from sbrrepro.datacheck import Split, check
from sbrrepro.errors import UserError
from sbrrepro.reader import MAX_ALIAS_SIZE, MAX_DEPTH, YAML_BYTES, parse_json, read_bytes, read_json, read_yaml
from tests.helpers import REPO, TABLE3, write_coco

RECIPE = REPO / "plans" / "sbr-cnn" / "recipe.yaml"
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"  # what a careless user passes for YAML: an image


def _plan(cfg: str) -> str:
    """A plan of one's own with one Mask R-CNN row whose `cfg:` is `cfg` (YAML text)."""
    return (f"paper: mine\ntable: t1\ntitle: test\nmetrics: [bbox_AP]\nrecipe_file: {RECIPE}\nrows:\n"
            f"  - row: 1\n    model: mask_rcnn\n    cfg: {cfg}\n")


def _alias_bomb(levels: int = 8, width: int = 9) -> str:
    """`levels` levels of `width` aliases of the level below: width ** levels nodes written out."""
    lines = [f"\n      - &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"\n      - &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n      model.type:" + "".join(lines)


def _refused(cli, path: Path, *args: str, named: str | None = None, said: str = "") -> str:
    """Run the CLI with `args`; it must fail in under 5 s with one stderr line naming `named` (default
    `path`) and saying `said`, no traceback, exit 2. Returns the line."""
    start = time.perf_counter()
    result = cli(*args, timeout=60)
    seconds = time.perf_counter() - start
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("sbrrepro: error: ") and str(named or path) in lines[0] and said in lines[0], lines
    assert seconds < 5, f"{seconds:.1f} s"
    return lines[0]


def _png(width: int, height: int, pixels: bytes = b"not zlib data") -> bytes:
    """A grayscale PNG whose header says width x height; its pixel data is whatever is given (never
    decoded by a header check, so it need not even be valid)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _dataset(root: Path, width: int, height: int, png: bytes, **profile: object) -> Path:
    """A one-image COCO dataset under `root` with its dataset profile (train and val the same)."""
    (root / "images").mkdir(parents=True)
    (root / "images" / "big.png").write_bytes(png)
    write_coco(root / "ann.json", [{"id": 7, "file_name": "big.png", "width": width, "height": height}],
               [(7, [1.0, 1.0, 10.0, 10.0], 0)])
    split = {"ann": "ann.json", "images": "images/"}
    (root / "profile.yaml").write_text(json.dumps({"name": "big", "train": split, "val": split, **profile}))
    return root / "profile.yaml"


# --- through the command line ----------------------------------------------------------------------------


def test_a_binary_plan_is_one_line(cli, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_bytes(BINARY)
    line = _refused(cli, plan, "run", str(plan), "--dry-run", "--study", str(tmp_path / "s"), said="not UTF-8")
    assert "byte 0x89 at line 1, column 1" in line and "expected a YAML plan" in line, line
    assert not (tmp_path / "s").exists()


def test_a_binary_dataset_profile_is_one_line(cli, tmp_path):
    profile = tmp_path / "data.yaml"
    profile.write_bytes(BINARY)
    _refused(cli, profile, "run", str(TABLE3), "--dry-run", "--dataset", str(profile), "--study", str(tmp_path / "s"),
             said="not UTF-8")
    assert not (tmp_path / "s").exists()


def test_a_binary_cluster_profile_is_one_line(cli, tmp_path):
    profile = tmp_path / "cluster.yaml"
    profile.write_bytes(BINARY)
    _refused(cli, profile, "run", str(TABLE3), "--smoke", "--dry-run", "--cluster", str(profile), "--study",
             str(tmp_path / "s"), said="not UTF-8")
    assert not (tmp_path / "s").exists()


def test_a_binary_annotation_file_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    profile = _dataset(tmp_path / "data", 64, 64, _png(64, 64))
    (tmp_path / "data" / "ann.json").write_bytes(BINARY)
    _refused(cli, profile, "check-data", str(profile), "--study", str(tmp_path / "s"),
             named=str(tmp_path / "data" / "ann.json"), said="expected COCO instances JSON")


@pytest.mark.slow
def test_a_deeply_nested_plan_is_one_line(cli, tmp_path):
    plan = tmp_path / "plan.yaml"
    for depth, said in ((20_000, "nesting depth"), (MAX_DEPTH, f"nested deeper than {MAX_DEPTH} levels")):
        plan.write_text(_plan("{model.type: " + "[" * depth + "]" * depth + "}"))
        _refused(cli, plan, "run", str(plan), "--dry-run", "--study", str(tmp_path / "s"), said=said)
    assert not (tmp_path / "s").exists()


def test_an_alias_bomb_in_a_plan_is_one_line(cli, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(_plan(_alias_bomb()))
    assert plan.stat().st_size < 1000  # 43 million nodes written out
    _refused(cli, plan, "run", str(plan), "--dry-run", "--study", str(tmp_path / "s"), said="aliases add more than")
    assert not (tmp_path / "s").exists()


def test_a_fifo_for_a_plan_is_one_line_and_never_opened(cli, tmp_path):
    fifo = tmp_path / "plan.yaml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    _refused(cli, fifo, "run", str(fifo), "--dry-run", "--study", str(tmp_path / "s"), said="FIFO")


def test_an_oversized_plan_is_one_line(cli, tmp_path):
    plan = tmp_path / "plan.yaml"
    with plan.open("wb") as f:
        f.truncate(YAML_BYTES + 1)  # sparse: nothing written, nothing read
    _refused(cli, plan, "run", str(plan), "--dry-run", "--study", str(tmp_path / "s"),
             said=f"{YAML_BYTES + 1:,} bytes")


def test_an_image_claiming_400_megapixels_is_refused_undecoded(cli, tmp_path, monkeypatch):
    """Its header says 20000 x 20000; its pixel data is not even valid, so a check that decoded it
    would fail differently. Refused by default, naming the file and the image id; a profile's
    `max_image_pixels` admits it, still reading its header alone."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    profile = _dataset(tmp_path / "data", 20000, 20000, _png(20000, 20000))
    image = tmp_path / "data" / "images" / "big.png"
    line = _refused(cli, profile, "check-data", str(profile), "--study", str(tmp_path / "s"), named=str(image),
                    said="image id 7")
    assert f"{20000 * 20000:,} pixels" in line and f"{datacheck.MAX_PIXELS:,}" in line, line
    profile.write_text(json.dumps({**json.loads(profile.read_text()), "max_image_pixels": 20000 * 20000}))
    result = cli("check-data", str(profile), "--study", str(tmp_path / "s"), timeout=60)
    assert result.returncode == 0 and "train: 1 images" in result.stdout, result.stderr


@pytest.mark.slow
def test_nothing_in_a_plan_is_executed(cli, tmp_path):
    """Strings that look like Python, shell, MMEngine's templates or YAML's Python tags, in every field
    that takes free text (a label's line break included, which once began a line of the generated
    config): loaded, dry-run, and the configs loaded by MMEngine as a job loads them; no sentinel file."""
    from mmengine.config import Config

    sentinel = tmp_path / "SENTINEL"
    code = f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
    shell = f"$(touch {sentinel}) `touch {sentinel}`; touch {sentinel}"
    rows = [{"row": 1, "model": "mask_rcnn", "label": f"x\n{code}\n# {{{{ fileDirname }}}}",
             "note": shell + " {{ _base_.model }} ${HOME}",
             "cfg": {"default_scope": f"');{code};('", "model.type": code}},
            {"row": 2, "cited": f"!!python/object/apply:os.system [{shell!r}]"}]
    plan = tmp_path / "plan.yaml"  # JSON is YAML: every string exactly as given
    plan.write_text(json.dumps({"paper": "evil", "table": "t1", "title": code, "metrics": ["bbox_AP"],
                                "recipe_file": str(RECIPE), "rows": rows}))
    result = cli("run", str(plan), "--smoke", "--dry-run", "--study", str(tmp_path / "s"), timeout=60)
    assert result.returncode == 0, result.stderr
    configs = sorted((tmp_path / "s" / "configs").glob("*.py"))
    assert configs
    for config in configs:
        assert Config.fromfile(str(config), import_custom_modules=False).default_scope.endswith(".touch();('")
    assert not sentinel.exists()

    tagged = tmp_path / "tagged.yaml"
    tagged.write_text(_plan(f"{{model.type: !!python/object/apply:os.system [{json.dumps(f'touch {sentinel}')}]}}"))
    _refused(cli, tagged, "run", str(tagged), "--dry-run", "--study", str(tmp_path / "s2"), said="python/object")
    assert not sentinel.exists() and not (tmp_path / "s2").exists()


# --- the reader's bounds ------------------------------------------------------------------------------------


def _yaml(tmp_path: Path, text: str) -> object:
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    return read_yaml(path)


def test_yaml_nesting_is_bounded(tmp_path):
    assert _yaml(tmp_path, "[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(UserError, match=rf"nested deeper than {MAX_DEPTH} levels \(line 1, column {MAX_DEPTH + 1}\)"):
        _yaml(tmp_path, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    # an alias of a deep node put deep again nests as deep as it is written out
    half = MAX_DEPTH // 2 + 1
    with pytest.raises(UserError, match="an alias written out"):
        _yaml(tmp_path, f"a: &deep {'[' * half}{']' * half}\nb: {'[' * half}*deep{']' * half}\n")


def test_yaml_aliases_may_repeat_but_not_multiply(tmp_path):
    assert _yaml(tmp_path, "best: &best {lr: 0.02, epochs: 12}\nrow: {<<: *best, epochs: 24}\n")["row"] == \
        {"lr": 0.02, "epochs": 24}
    assert len(_yaml(tmp_path, "a: &a [x, y, z]\nb: [" + ", ".join(["*a"] * 1000) + "]\n")["b"]) == 1000
    # four levels of nine aliases (about 270,000 nodes and characters written out) pass; eight do not
    assert _yaml(tmp_path, "b: " + _alias_bomb(levels=4).replace("\n      model.type:", ""))
    start = time.perf_counter()
    with pytest.raises(UserError, match=f"aliases add more than {MAX_ALIAS_SIZE:,}"):
        _yaml(tmp_path, "b: " + _alias_bomb().replace("\n      model.type:", ""))
    assert time.perf_counter() - start < 1
    with pytest.raises(UserError, match="an alias inside its own anchor"):
        _yaml(tmp_path, "a: &a [1, *a]\n")


def test_yaml_is_data_only(tmp_path):
    with pytest.raises(UserError, match=r"not valid YAML \(line 1, column 4\).*python/object"):
        _yaml(tmp_path, "a: !!python/object/apply:os.getcwd []\n")


def test_only_regular_files_of_bounded_size_are_read(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="is a FIFO"):
        read_bytes(fifo, 10)
    with pytest.raises(UserError, match="is a character device, not a regular file; expected text"):
        read_bytes(Path(os.devnull), 10, "text")
    with pytest.raises(IsADirectoryError):
        read_bytes(tmp_path, 10)
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "none", 10)
    (tmp_path / "f").write_bytes(b"x" * 11)
    with pytest.raises(UserError, match="is 11 bytes, more than the 10"):
        read_bytes(tmp_path / "f", 10)
    assert read_bytes(tmp_path / "f", 11) == b"x" * 11


def test_text_is_utf8(tmp_path):
    path = tmp_path / "doc.json"
    path.write_bytes(b'{"a":\n  "caf\xc3\xa9 \xe9"}')
    with pytest.raises(UserError, match=r"not UTF-8 text: byte 0xe9 at line 2, column 10 \(byte 15\)"):
        read_json(path)
    path.write_bytes(b'\xef\xbb\xbf{"a": "caf\xc3\xa9"}')  # a BOM, as Windows editors write
    assert read_json(path) == {"a": "caf\u00e9"}


def test_json_errors_say_where(tmp_path):
    with pytest.raises(UserError, match=r"x.json: not valid JSON \(line 2, column 3\): Expecting value; expected it"):
        parse_json('{"a":\n  }', "x.json", "it")
    with pytest.raises(UserError, match="nested deeper than Python's JSON parser goes"):
        parse_json("[" * 100_000 + "]" * 100_000, "x.json")
    path = tmp_path / "doc.json"
    path.write_text('{"a": {"segmentation": [1], "b": 2}}')
    assert read_json(path, object_hook=lambda d: {k: v for k, v in d.items() if k != "segmentation"}) == \
        {"a": {"b": 2}}


def test_the_datacheck_cache_keeps_the_pixel_bound(tmp_path):
    """A split passed under a raised bound is checked again under a lower one, not served from the cache."""
    _dataset(tmp_path, 20000, 20000, _png(20000, 20000))
    split, cache = Split("train", tmp_path / "ann.json", tmp_path / "images"), tmp_path / "cache.json"
    assert check(split, cache, max_pixels=20000 * 20000).images == 1
    with pytest.raises(UserError, match="image id 7"):
        check(split, cache)
    assert check(split, cache, max_pixels=20000 * 20000).images == 1


def test_the_readers_are_the_only_parsers():
    """Every YAML and JSON file sbrrepro reads goes through the reader (`json.dumps` is fine)."""
    import re

    parsing = re.compile(r"yaml\.safe_load|yaml\.load\(|json\.loads?\(")
    found = [str(p.relative_to(REPO)) for p in (REPO / "sbrrepro").rglob("*.py") if parsing.search(p.read_text())]
    assert found == [str(Path(reader.__file__).relative_to(REPO))]
