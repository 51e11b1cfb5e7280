"""sbrrepro.files: a file written by `atomic_write` is whole or as it was, never half-written."""

from __future__ import annotations

import pytest

from sbrrepro.files import atomic_write


def test_atomic_write_writes_the_text_into_new_folders_and_replaces_a_file(tmp_path):
    path = tmp_path / "a" / "b" / "results.json"
    atomic_write(path, "[1]")
    assert path.read_text() == "[1]"
    atomic_write(path, "[2]")
    assert path.read_text() == "[2]" and [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_a_write_that_fails_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "rows.json"
    with pytest.raises(UnicodeEncodeError):  # fails in the middle of writing
        atomic_write(path, "[1, 2, " + "\udc80" + "]")
    assert not path.exists(), "no file half-written in its place"
    atomic_write(path, "[1]")
    with pytest.raises(UnicodeEncodeError):
        atomic_write(path, "[1, 2, " + "\udc80" + "]")
    assert path.read_text() == "[1]"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"], "nor its temporary file beside it"
