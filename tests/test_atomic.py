"""Atomic writes: the old file or the new one, never a torn one, with the permissions the umask gives."""

import os

import pytest

from ada2i_fast.atomic import atomic_open, strict_json, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"epoch": 1})
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write(b"{torn")
        raise RuntimeError("killed")
    assert path.read_text() == '{\n  "epoch": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {})
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_non_finite_floats_become_null():
    assert strict_json({"loss": float("nan"), "f1": [0.5, float("inf")]}) == '{"loss": null, "f1": [0.5, null]}'
