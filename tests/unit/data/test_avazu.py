"""Avazu CSV reader: header check, keys hashed exactly as stock TensorFlow, bad input counted."""

from __future__ import annotations

import datetime
import gzip

import numpy as np
import pytest

from herald_tf.data.avazu import (
    AVAZU_COLUMNS,
    HOUR_OF_DAY_FIELD,
    NUM_SPARSE,
    WEEKDAY_FIELD,
    AvazuFormatError,
    AvazuReader,
    days_from_civil,
    fingerprint64,
    fingerprint64_py,
    hash32,
    keys_tf,
    read_keys,
    write_synthetic_avazu,
)

HEADER = ",".join(AVAZU_COLUMNS)
GOOD = ("1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,"
        "07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79")


def _write(path, lines: list[str], header: str = HEADER) -> str:
    path.write_text("\n".join([header] + lines) + "\n")
    return str(path)


def _rows(reader: AvazuReader) -> int:
    return sum(len(b) for b in reader)


def test_wrong_header_is_a_clear_error(tmp_path) -> None:
    wrong = HEADER.replace("site_id", "site")
    with pytest.raises(AvazuFormatError, match=r"Expected the Avazu header .*a\.csv:1"):
        list(AvazuReader(_write(tmp_path / "a.csv", [GOOD], header=wrong)))


def test_unlabelled_test_file_header_is_refused_with_a_hint(tmp_path) -> None:
    test_header = HEADER.replace("click,", "")
    with pytest.raises(AvazuFormatError, match="no click column"):
        list(AvazuReader(_write(tmp_path / "a.csv", [], header=test_header)))


def test_empty_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("")
    with pytest.raises(AvazuFormatError, match="empty first line"):
        list(AvazuReader(str(path)))


def test_header_with_crlf_and_bom_is_accepted(tmp_path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\n" + GOOD + "\r\n").encode())
    reader = AvazuReader(str(path))
    assert _rows(reader) == 1 and reader.skipped == 0


def test_hashing_equals_tensorflows_fingerprint64_for_every_length() -> None:
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    lengths = list(range(0, 140)) + [191, 192, 193, 256, 1000]
    values = [bytes(rng.integers(1, 256, n, dtype=np.uint8)) for n in lengths for _ in range(3)]
    values += [b"", b"a", b"1005", b"14102100", b"1fbe01fe", "caf\u00e9".encode()]
    expected = tf.fingerprint(tf.constant(values)).numpy().view("<u8").ravel()
    np.testing.assert_array_equal(fingerprint64(values), expected)
    assert [fingerprint64_py(v) for v in values] == expected.tolist()
    buckets = tf.strings.to_hash_bucket_fast(tf.constant(values), 2**32).numpy()
    np.testing.assert_array_equal(hash32(values), buckets)


def test_reader_keys_equal_stock_tensorflow_keys_from_the_raw_columns(tmp_path) -> None:
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "a.csv"
    write_synthetic_avazu(path, 300, seed=3)
    keys = read_keys(path)
    lines = path.read_bytes().splitlines()[1:]
    columns = tf.strings.split(tf.constant(lines), ",").to_tensor()
    np.testing.assert_array_equal(keys_tf(columns[:, 2:]).numpy(), keys)


def test_keys_are_field_shifted_int64_with_hour_of_day_and_weekday(tmp_path) -> None:
    batch = next(iter(AvazuReader(_write(tmp_path / "a.csv", [GOOD]))))
    assert batch.keys.dtype == np.int64 and batch.keys.shape == (1, NUM_SPARSE)
    assert batch.dense.shape == (1, 0) and batch.dense.dtype == np.float32
    assert batch.labels.dtype == np.int8 and batch.labels.tolist() == [0]
    values = GOOD.split(",")[2:]
    for field, value in enumerate(values):
        assert batch.keys[0, field] == (field << 32) | int(hash32([value.encode()])[0])
    assert batch.keys[0, HOUR_OF_DAY_FIELD] == (HOUR_OF_DAY_FIELD << 32) | 0
    # 2014-10-21 was a Tuesday (Monday = 0).
    assert batch.keys[0, WEEKDAY_FIELD] == (WEEKDAY_FIELD << 32) | 1


def test_days_from_civil_matches_python_dates() -> None:
    dates = [datetime.date(2000, 1, 1) + datetime.timedelta(days=d) for d in range(0, 40000, 37)]
    y = np.array([d.year for d in dates])
    m = np.array([d.month for d in dates])
    day = np.array([d.day for d in dates])
    epoch = datetime.date(1970, 1, 1)
    np.testing.assert_array_equal(days_from_civil(y, m, day),
                                  [(d - epoch).days for d in dates])


@pytest.mark.parametrize("bad", [
    ",".join(GOOD.split(",")[:-1]),             # a field missing
    GOOD + ",7",                                # a field too many
    GOOD.replace(",0,", ",2,", 1),              # click not 0/1
    GOOD.replace(",0,", ",,", 1),               # click empty
    GOOD.replace("14102100", "1410210"),        # hour not 8 digits
    GOOD.replace("14102100", "14x02100"),       # hour not a number
    GOOD.replace("14102100", "14102124"),       # hour of day 24
    GOOD.replace("14102100", "14023100"),       # February 31st
    GOOD.replace("14102100", "14130100"),       # month 13
])
def test_malformed_lines_are_skipped_and_counted(tmp_path, bad: str) -> None:
    reader = AvazuReader(_write(tmp_path / "a.csv", [GOOD, bad, GOOD]))
    assert _rows(reader) == 2 and reader.skipped == 1 and reader.rows == 2


def test_empty_lines_are_skipped_without_counting(tmp_path) -> None:
    reader = AvazuReader(_write(tmp_path / "a.csv", ["", GOOD, "", "", GOOD, "\r"]))
    assert _rows(reader) == 2 and reader.skipped == 0


def test_empty_categorical_values_are_hashed_like_any_string(tmp_path) -> None:
    line = GOOD.replace(",1fbe01fe,", ",,")
    batch = next(iter(AvazuReader(_write(tmp_path / "a.csv", [line]))))
    assert batch.keys[0, 3] == (3 << 32) | int(hash32([b""])[0])


def test_strict_mode_names_the_file_and_line(tmp_path) -> None:
    path = _write(tmp_path / "a.csv", [GOOD, "", "garbage"])
    with pytest.raises(AvazuFormatError, match=r"a\.csv:4"):
        list(AvazuReader(path, strict=True))


def test_streaming_chunks_do_not_change_the_batches(tmp_path) -> None:
    path = tmp_path / "a.csv"
    write_synthetic_avazu(path, 1000, seed=1)
    whole = next(iter(AvazuReader(path, batch_rows=10**6)))
    reader = AvazuReader(path, batch_rows=64, chunk_bytes=500)
    parts = list(reader)
    assert [len(p) for p in parts] == [64] * 15 + [40]
    assert reader.rows == 1000 and reader.skipped == 0
    np.testing.assert_array_equal(np.concatenate([p.keys for p in parts]), whole.keys)
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), whole.labels)
    assert np.concatenate([p.dense for p in parts]).shape == (1000, 0)


def test_gzip_files_read_like_plain_ones(tmp_path) -> None:
    path = tmp_path / "a.csv"
    write_synthetic_avazu(path, 200, seed=2)
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_keys(gz), read_keys(path))


def test_synthetic_writer_is_deterministic_and_seeded(tmp_path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    write_synthetic_avazu(a, 500, seed=7)
    write_synthetic_avazu(b, 500, seed=7)
    write_synthetic_avazu(c, 500, seed=8)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    reader = AvazuReader(a)
    labels = np.concatenate([batch.labels for batch in reader])
    assert reader.rows == 500 and reader.skipped == 0
    assert 0.05 < labels.mean() < 0.5
    keys = read_keys(a)
    assert set(np.unique(keys[:, HOUR_OF_DAY_FIELD] & 0xFFFFFFFF).tolist()) <= set(range(24))
    assert len(np.unique(keys[:, 0])) == 240  # every hour of 2014-10-21 .. 2014-10-30


def test_bad_arguments_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="batch_rows"):
        AvazuReader(tmp_path / "a.csv", batch_rows=0)
