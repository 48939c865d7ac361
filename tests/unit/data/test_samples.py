"""A run's samples parsed from a file into a memory mapping (``read_samples``) equal the same
samples held in memory: training batches, held-out tail and distinct training keys; the parsed
copy leaves no file behind; bad files are refused or their skipped lines reported."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from herald_tf.data import CriteoFormatError, CriteoReader, SyntheticConfig, SyntheticCriteo
from herald_tf.data.avazu import AvazuFormatError, AvazuReader, write_synthetic_avazu
from herald_tf.data.criteo import CriteoBatch
from herald_tf.data.samples import Samples, read_samples

GOOD = "\t".join(["1"] + ["3"] * 13 + ["68fd1e64"] * 26)


def _write(path: Any, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def criteo_file(tmp_path_factory: Any) -> str:
    """1,003 synthetic Criteo lines (the reader's chunks of 64 rows do not divide it)."""
    path = tmp_path_factory.mktemp("data") / "c.tsv"
    SyntheticCriteo(SyntheticConfig(scale=1e-4, seed=3)).write_tsv(str(path), 1003)
    return str(path)


def _whole(path: str, n: int | None = None) -> CriteoBatch:
    parts = list(CriteoReader(path))
    return CriteoBatch(labels=np.concatenate([p.labels for p in parts])[:n],
                       dense=np.concatenate([p.dense for p in parts])[:n],
                       keys=np.concatenate([p.keys for p in parts])[:n])


def _mapped(path: str, limit: int | None = None, held_out: float = 0.1,
            warn: Any = None) -> Samples:
    return read_samples(CriteoReader(path, batch_rows=64), limit, held_out,
                        warn=warn or (lambda text: pytest.fail(text)))


def _same(a: list[CriteoBatch], b: list[CriteoBatch]) -> None:
    assert [len(x) for x in a] == [len(x) for x in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.keys, y.keys)
        np.testing.assert_array_equal(x.dense, y.dense)
        np.testing.assert_array_equal(x.labels, y.labels)


@pytest.mark.parametrize("limit", [None, 500, 5000])
def test_mapped_samples_equal_the_same_samples_in_memory(criteo_file: str,
                                                         limit: int | None) -> None:
    memory = Samples(_whole(criteo_file, limit), 0.1)
    mapped = _mapped(criteo_file, limit)
    assert isinstance(mapped.data.keys, np.memmap)
    assert (mapped.num_train, mapped.num_held_out) == (memory.num_train, memory.num_held_out)
    assert mapped.num_train + mapped.num_held_out == min(limit or 1003, 1003)
    assert (mapped.fields, mapped.dense_width) == (26, 13)
    _same(list(mapped.train_batches(100)), list(memory.train_batches(100)))
    _same(list(mapped.held_out(33)), list(memory.held_out(33)))


def test_an_epoch_is_whole_batches_of_the_training_part_in_order(criteo_file: str) -> None:
    whole = _whole(criteo_file)
    samples = _mapped(criteo_file)
    batches = list(samples.train_batches(128))
    assert len(batches) == samples.num_train // 128 and all(len(b) == 128 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b.keys for b in batches]),
                                  whole.keys[:len(batches) * 128])
    assert not any(isinstance(b.keys, np.memmap) for b in batches)  # copies, not views


def test_the_held_out_tail_follows_the_training_part(criteo_file: str) -> None:
    whole = _whole(criteo_file)
    samples = _mapped(criteo_file, held_out=0.25)
    tail = list(samples.held_out(1000))
    assert [len(b) for b in tail] == [samples.num_held_out]
    np.testing.assert_array_equal(tail[0].keys, whole.keys[samples.num_train:])


def test_no_held_out_fraction_trains_on_everything(criteo_file: str) -> None:
    samples = _mapped(criteo_file, held_out=0.0)
    assert samples.num_held_out == 0 and list(samples.held_out(10)) == []


@pytest.mark.parametrize("chunk", [7, 100, 1 << 16])
def test_distinct_training_keys_are_counted_over_chunks(criteo_file: str, chunk: int) -> None:
    samples = _mapped(criteo_file)
    expected = np.unique(_whole(criteo_file).keys[:samples.num_train]).size
    assert samples.distinct_train_keys(chunk) == expected


def test_the_parsed_copy_leaves_no_file_behind(criteo_file: str, tmp_path: Any) -> None:
    samples = read_samples(CriteoReader(criteo_file), None, 0.1, warn=print,
                           cache_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []
    assert len(list(samples.train_batches(100))) == samples.num_train // 100


def test_an_unwritable_cache_folder_is_named_in_the_error(criteo_file: str,
                                                          tmp_path: Any) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(OSError, match=f"Expected a writable folder.*{missing}.*--data-cache-dir"):
        read_samples(CriteoReader(criteo_file), None, 0.1, warn=print, cache_dir=str(missing))


def test_a_file_with_no_usable_line_is_refused_naming_the_file_and_the_format(tmp_path: Any
                                                                              ) -> None:
    path = _write(tmp_path / "commas.tsv", [GOOD.replace("\t", ",")] * 3)
    with pytest.raises(CriteoFormatError) as e:
        _mapped(path)
    assert str(e.value).startswith("Expected Criteo Kaggle TSV: 40 tab-separated fields")
    assert f"Received: no usable line in {path} (3 malformed lines skipped)" in str(e.value)
    assert os.listdir(tmp_path) == ["commas.tsv"]


def test_an_empty_file_is_refused_naming_the_file(tmp_path: Any) -> None:
    path = tmp_path / "empty.tsv"
    path.write_text("")
    with pytest.raises(CriteoFormatError, match=f"no usable line in {path}"):
        _mapped(str(path))


def test_an_avazu_file_with_no_usable_line_is_refused_with_the_avazu_format(tmp_path: Any
                                                                             ) -> None:
    path = tmp_path / "a.csv"
    write_synthetic_avazu(path, 0, seed=0)  # the header only
    with pytest.raises(AvazuFormatError, match="Expected Avazu CSV.*no usable line"):
        read_samples(AvazuReader(str(path)), None, 0.1, warn=print)


def test_an_avazu_file_maps_with_no_numeric_features(tmp_path: Any) -> None:
    path = tmp_path / "a.csv"
    write_synthetic_avazu(path, 50, seed=0)
    samples = read_samples(AvazuReader(str(path), batch_rows=7), None, 0.2, warn=print)
    assert (samples.num_train, samples.num_held_out, samples.fields, samples.dense_width) == (
        40, 10, 24, 0)
    batches = list(samples.train_batches(8))
    assert len(batches) == 5 and batches[0].dense.shape == (8, 0)


def test_skipped_lines_are_reported_once_with_their_count(tmp_path: Any) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD, "bad", GOOD, GOOD.replace("\t", ","), GOOD])
    warnings: list[str] = []
    samples = _mapped(path, held_out=0.0, warn=warnings.append)
    assert samples.num_train == 3
    assert len(warnings) == 1 and f"{path}: skipped 2 malformed lines" in warnings[0]


def test_a_limit_keeps_the_first_samples_and_says_where_it_counted(tmp_path: Any) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD] * 5 + ["bad"])
    warnings: list[str] = []
    samples = _mapped(path, limit=3, held_out=0.0, warn=warnings.append)
    assert samples.num_train == 3 and samples.fields == 26
    # the reader parses whole chunks, so it saw the bad line after the third sample
    assert len(warnings) == 1 and "skipped 1 malformed lines among the lines read" in warnings[0]


def test_a_strict_reader_stops_at_the_first_bad_line_and_leaves_no_file(tmp_path: Any) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD, "bad", GOOD])
    with pytest.raises(CriteoFormatError, match=r"a\.tsv:2"):
        read_samples(CriteoReader(path, strict=True), None, 0.1, warn=print)
    assert os.listdir(tmp_path) == ["a.tsv"]


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_refuses_a_held_out_fraction_outside_0_to_1(criteo_file: str, fraction: float) -> None:
    with pytest.raises(ValueError, match="held_out_fraction"):
        _mapped(criteo_file, held_out=fraction)


def _kept(path: str, folder: Any, limit: int | None = None,
          warn: Any = None) -> tuple[Samples, CriteoReader]:
    reader = CriteoReader(path, batch_rows=64)
    return read_samples(reader, limit, 0.1, warn=warn or (lambda text: pytest.fail(text)),
                        cache_dir=str(folder), keep=True), reader


def _kept_folders(folder: Any) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("herald-samples-")
                  and not n.endswith(".lock"))


def test_kept_samples_are_parsed_once_and_mapped_again_by_a_later_call(
        criteo_file: str, tmp_path: Any) -> None:
    first, reader = _kept(criteo_file, tmp_path)
    assert reader.rows == 1003 and len(_kept_folders(tmp_path)) == 1
    again, reader = _kept(criteo_file, tmp_path)
    assert reader.rows == 0  # nothing parsed
    memory = Samples(_whole(criteo_file), 0.1)
    for samples in (first, again):
        assert isinstance(samples.data.keys, np.memmap)
        _same(list(samples.train_batches(100)), list(memory.train_batches(100)))
        _same(list(samples.held_out(33)), list(memory.held_out(33)))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".herald-samples-")]


def test_processes_reading_the_same_file_parse_it_once(criteo_file: str, tmp_path: Any) -> None:
    script = ("import sys\n"
              "from herald_tf.data import CriteoReader, read_samples\n"
              "reader = CriteoReader(sys.argv[1], batch_rows=64)\n"
              "s = read_samples(reader, None, 0.1, warn=print, cache_dir=sys.argv[2], keep=True)\n"
              "print('parsed', reader.rows, 'samples', s.num_train + s.num_held_out)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, criteo_file, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0]
    parsed = sorted(line for out in outputs for line in out.splitlines()
                    if line.startswith("parsed"))
    assert parsed == ["parsed 0 samples 1003"] * 2 + ["parsed 1003 samples 1003"]
    assert len(_kept_folders(tmp_path)) == 1


def test_a_changed_file_or_other_options_get_their_own_kept_samples(tmp_path: Any) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD] * 5)
    cache = tmp_path / "cache"
    cache.mkdir()
    assert _kept(path, cache)[0].num_train == 5
    assert _kept(path, cache, limit=3)[0].num_train == 3
    os.utime(path, ns=(1, 1))  # the same size, another modification time
    assert _kept(path, cache)[1].rows == 5
    _write(tmp_path / "a.tsv", [GOOD] * 7)
    assert _kept(path, cache)[0].num_train == 7
    assert len(_kept_folders(cache)) == 4


def test_kept_samples_report_their_skipped_lines_on_every_use(tmp_path: Any) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD, "bad", GOOD])
    for _ in range(2):
        warnings: list[str] = []
        _kept(path, tmp_path, warn=warnings.append)
        assert len(warnings) == 1 and f"{path}: skipped 1 malformed lines" in warnings[0]


def test_a_kept_folder_that_does_not_match_its_record_is_refused_naming_it(
        criteo_file: str, tmp_path: Any) -> None:
    _kept(criteo_file, tmp_path)
    (folder,) = _kept_folders(tmp_path)
    with open(os.path.join(tmp_path, folder, "keys"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(OSError, match=f"Expected {tmp_path / folder} .*'keys' of 100 bytes.*"
                                      "remove the folder"):
        _kept(criteo_file, tmp_path)


def test_a_failed_parse_keeps_nothing_and_the_next_call_parses_again(tmp_path: Any) -> None:
    path = _write(tmp_path / "a.tsv", ["bad"] * 3)
    cache = tmp_path / "cache"
    cache.mkdir()
    for _ in range(2):
        with pytest.raises(CriteoFormatError, match="no usable line"):
            _kept(path, cache)
    assert _kept_folders(cache) == [] and not [
        n for n in os.listdir(cache) if n.startswith(".herald-samples-")]
