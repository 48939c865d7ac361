"""Data files are written whole or not at all (herald_tf/data/_atomic.py)."""

from __future__ import annotations

import os
import stat

import pytest

from herald_tf.data import CriteoReader, SyntheticConfig, SyntheticCriteo
from herald_tf.data._atomic import atomic_text_file
from herald_tf.data.avazu import write_synthetic_avazu


def test_the_file_appears_only_when_the_block_ends(tmp_path) -> None:
    path = tmp_path / "out.tsv"
    with atomic_text_file(path) as f:
        f.write("partial\n")
        assert not path.exists()
    assert path.read_text() == "partial\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tsv"]


def test_an_error_in_the_block_removes_the_temporary_file(tmp_path) -> None:
    path = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError), atomic_text_file(path) as f:
        f.write("partial\n")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_the_file_gets_the_permissions_open_would_give(tmp_path) -> None:
    with open(tmp_path / "plain", "w"):
        pass
    with atomic_text_file(tmp_path / "atomic") as f:
        f.write("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert stat.S_IMODE(os.stat(tmp_path / "atomic").st_mode) == mode


def test_a_relative_path_in_the_working_directory_is_written(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with atomic_text_file("here.tsv") as f:
        f.write("x\n")
    assert (tmp_path / "here.tsv").read_text() == "x\n"


def test_write_tsv_writes_every_line_readable(tmp_path) -> None:
    path = tmp_path / "demo.tsv"
    SyntheticCriteo(SyntheticConfig(scale=0.001)).write_tsv(path, 300)
    reader = CriteoReader(path)
    assert sum(len(b) for b in reader) == 300 and reader.skipped == 0


def test_a_failed_synthetic_avazu_write_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "a.csv"
    write_synthetic_avazu(path, 20, seed=0)
    before = path.read_bytes()
    # a header that cannot be written: the writer fails once its output file is open
    monkeypatch.setattr("herald_tf.data.avazu.AVAZU_COLUMNS", (None,))
    with pytest.raises(TypeError):
        write_synthetic_avazu(path, 30, seed=1)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.csv"]
