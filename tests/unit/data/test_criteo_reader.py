"""Criteo TSV reader: int64 keys, dense transform, bad input skipped and counted (or strict)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from herald_tf.data import EMPTY_KEY_BIT, CriteoFormatError, CriteoReader, empty_key, read_keys

GOOD = "\t".join(["1", "0", "-1", "", "3"] + ["5"] * 9 + ["68fd1e64", ""] + ["ffffffff"] * 24)


def _write(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_keys_are_field_shifted_int64_and_empty_values_get_the_reserved_key(tmp_path) -> None:
    batch = next(iter(CriteoReader(_write(tmp_path / "a.tsv", [GOOD]))))
    assert batch.keys.dtype == np.int64 and batch.keys.shape == (1, 26)
    assert batch.keys[0, 0] == 0x68FD1E64
    assert batch.keys[0, 1] == empty_key(1) == EMPTY_KEY_BIT | (1 << 32)
    assert batch.keys[0, 25] == (25 << 32) | 0xFFFFFFFF
    assert batch.labels.tolist() == [1]


def test_dense_is_log1p_above_minus_one_else_minus_one(tmp_path) -> None:
    batch = next(iter(CriteoReader(_write(tmp_path / "a.tsv", [GOOD]))))
    np.testing.assert_allclose(batch.dense[0, :4], [0.0, -1.0, 0.0, np.log(4.0)], rtol=1e-6)
    assert batch.dense.dtype == np.float32


@pytest.mark.parametrize("bad", [
    "\t".join(GOOD.split("\t")[:-1]),             # a field missing
    GOOD.replace("1\t", "2\t", 1),                # label not 0/1
    GOOD.replace("\t3\t", "\t3.5\t", 1),          # dense not an integer
    GOOD.replace("68fd1e64", "68fd1e6z"),         # categorical not hex
    GOOD.replace("68fd1e64", "168fd1e64"),        # more than 32 bits
    GOOD.replace("68fd1e64", "68fd1\u00e964"),    # not ASCII
    GOOD.replace("\t3\t", "\t3-\t", 1),           # sign in the middle
])
def test_malformed_lines_are_skipped_and_counted(tmp_path, bad: str) -> None:
    reader = CriteoReader(_write(tmp_path / "a.tsv", [GOOD, bad, "", GOOD]))
    rows = sum(len(b) for b in reader)
    assert rows == 2 and reader.skipped == 1 and reader.rows == 2


_UNICODE_DIGITS = ["\u00b2", "\u0663", "\uff13", "1\u00b9"]  # superscript, Arabic, fullwidth


@pytest.mark.parametrize("digit", _UNICODE_DIGITS, ids=["super2", "arabic3", "fullwidth3",
                                                        "1super1"])
def test_a_dense_value_with_non_ascii_digits_is_skipped_and_counted(tmp_path, digit: str) -> None:
    bad = GOOD.replace("\t3\t", f"\t{digit}\t", 1)
    reader = CriteoReader(_write(tmp_path / "a.tsv", [GOOD, bad, GOOD]))
    batches = list(reader)
    assert sum(len(b) for b in batches) == 2 and reader.skipped == 1
    np.testing.assert_allclose(batches[0].dense[:, 3], np.log(4.0), rtol=1e-6)


def test_strict_mode_names_the_file_and_line_of_non_ascii_digits(tmp_path) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD, GOOD.replace("\t3\t", "\t-\u00b2\t", 1)])
    with pytest.raises(CriteoFormatError, match=r"Expected 40 tab-separated.*a\.tsv:2"):
        list(CriteoReader(path, strict=True))


def test_strict_mode_names_the_file_and_line(tmp_path) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD, "garbage"])
    with pytest.raises(CriteoFormatError, match=r"a\.tsv:2"):
        list(CriteoReader(path, strict=True))


def test_crlf_line_endings_are_accepted(tmp_path) -> None:
    path = tmp_path / "a.tsv"
    path.write_bytes((GOOD + "\r\n" + GOOD + "\r\n").encode())
    reader = CriteoReader(str(path))
    assert sum(len(b) for b in reader) == 2 and reader.skipped == 0


def test_gzip_and_batching(tmp_path) -> None:
    path = tmp_path / "a.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join([GOOD] * 5) + "\n")
    sizes = [len(b) for b in CriteoReader(str(path), batch_rows=2)]
    assert sizes == [2, 2, 1]
    assert read_keys(str(path), limit=3).shape == (3, 26)


def test_rebatch_regroups_chunks_into_exact_batches_in_order():
    from herald_tf.data.criteo import CriteoBatch, rebatch

    def chunk(start, n):
        ids = np.arange(start, start + n)
        return CriteoBatch(labels=(ids % 2).astype(np.int8),
                           dense=ids[:, None].astype(np.float32),
                           keys=np.stack([ids, ids + 100], axis=1))

    chunks = [chunk(0, 3), chunk(3, 0), chunk(3, 7), chunk(10, 1)]
    out = list(rebatch(iter(chunks), 4))
    assert [len(b) for b in out] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate([b.keys[:, 0] for b in out]), np.arange(11))
    np.testing.assert_array_equal(np.concatenate([b.dense[:, 0] for b in out]), np.arange(11))
