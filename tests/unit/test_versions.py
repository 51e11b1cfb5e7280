"""sbrrepro.versions: the installed stack's versions (None where missing), the checkout's `git describe`
(None without git or a checkout), and a digest of the package's Python source that changes with any of
it and with nothing else."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from sbrrepro import versions


def test_installed() -> None:
    assert versions.installed("torch") == version("torch")
    assert versions.installed("sbrrepro-no-such-distribution") is None


def test_stack_names_every_pinned_library_in_order() -> None:
    found = versions.stack()
    assert tuple(found) == versions.STACK and versions.STACK[0] == "sbrrepro"
    assert all(found[name] == version(name) for name in ("sbrrepro", "torch", "mmdet", "mmengine", "pycocotools"))


def test_commit_is_git_describe_of_the_checkout() -> None:
    git = shutil.which("git")
    if git is None or subprocess.run([git, "-C", str(versions.PACKAGE), "rev-parse"], capture_output=True).returncode:
        pytest.skip("no git checkout here")
    found = versions.commit()
    assert found is not None and re.fullmatch(r"[0-9A-Za-z._/-]+(-dirty)?", found), found
    head = subprocess.run([git, "-C", str(versions.PACKAGE), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert head[:7] in found  # describe ends in g<hash> past a tag, or is the hash itself


def test_commit_none_without_git_or_checkout(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(versions, "PACKAGE", tmp_path)  # an installed copy: no checkout around it
    assert versions.commit() is None
    monkeypatch.setattr(versions, "PACKAGE", Path(__file__).parent)
    monkeypatch.setenv("PATH", str(tmp_path))  # a compute node without git
    assert versions.commit() is None


def _package(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_text("A = 1\n")
    (root / "sub" / "b.py").write_text("B = 2\n")
    return root


def test_source_digest_follows_the_python_source(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(versions, "PACKAGE", _package(tmp_path / "pkg"))
    first = versions.source_digest()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    (tmp_path / "pkg" / "sub" / "data.json").write_text("{}")
    assert versions.source_digest() == first  # other files are not the code

    (tmp_path / "pkg" / "sub" / "b.py").write_text("B = 3\n")
    edited = versions.source_digest()
    (tmp_path / "pkg" / "sub" / "b.py").rename(tmp_path / "pkg" / "sub" / "c.py")
    renamed = versions.source_digest()
    (tmp_path / "pkg" / "d.py").write_text("")
    added = versions.source_digest()
    assert len({first, edited, renamed, added}) == 4


def test_source_digest_independent_of_where_the_package_is(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(versions, "PACKAGE", _package(tmp_path / "one"))
    here = versions.source_digest()
    monkeypatch.setattr(versions, "PACKAGE", _package(tmp_path / "elsewhere" / "two"))
    assert versions.source_digest() == here


def test_source_digest_of_the_package_is_stable() -> None:
    assert versions.source_digest() == versions.source_digest()
    package = versions.PACKAGE
    assert package == Path(versions.__file__).parent and (package / "cli.py").is_file()
