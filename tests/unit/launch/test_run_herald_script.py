"""examples/ctr/run_herald.py, the launcher's worker script: flags that cannot work are refused at
parsing, data files are read with their bad lines reported, and AllReduce needs no PS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from absl import app, flags

from examples.ctr import run_herald
from herald_tf.data import CriteoFormatError, CriteoReader
from herald_tf.data.avazu import AvazuFormatError, AvazuReader, write_synthetic_avazu

GOOD = "\t".join(["1"] + ["3"] * 13 + ["68fd1e64"] * 26)


@pytest.fixture
def parse() -> Iterator[Any]:
    """Parses run_herald's flags from an argument list; unparses them afterwards."""

    def _parse(*argv: str) -> None:
        run_herald.FLAGS(["run_herald.py", *argv])

    yield _parse
    run_herald.FLAGS.unparse_flags()


def _write(path: Any, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- checkpoint flags ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [("--checkpoint-every", "100"), ("--resume", "100")],
                         ids=["checkpoint_every", "resume"])
def test_checkpointing_without_a_checkpoint_dir_is_refused_at_parsing(parse: Any,
                                                                      argv: tuple[str, ...]
                                                                      ) -> None:
    with pytest.raises(flags.IllegalFlagValueError,
                       match="Expected --checkpoint-dir with --checkpoint-every or --resume"):
        parse(*argv)


def test_checkpointing_with_a_checkpoint_dir_is_accepted(parse: Any) -> None:
    parse("--checkpoint-dir", "ckpt", "--checkpoint-every", "100", "--resume", "200")
    assert run_herald.FLAGS["checkpoint-every"].value == 100


def test_a_negative_checkpoint_period_is_refused_at_parsing(parse: Any) -> None:
    with pytest.raises(flags.IllegalFlagValueError, match="checkpoint-every"):
        parse("--checkpoint-dir", "ckpt", "--checkpoint-every", "-1")


# -- data files ----------------------------------------------------------------------------------

def test_a_file_with_no_usable_line_is_refused_naming_the_file_and_the_format(tmp_path: Any
                                                                              ) -> None:
    path = _write(tmp_path / "commas.tsv", [GOOD.replace("\t", ",")] * 3)
    with pytest.raises(CriteoFormatError) as e:
        run_herald.read_file(CriteoReader(path), None)
    assert str(e.value).startswith("Expected Criteo Kaggle TSV: 40 tab-separated fields")
    assert f"Received: no usable line in {path} (3 malformed lines skipped)" in str(e.value)


def test_an_empty_file_is_refused_naming_the_file(tmp_path: Any) -> None:
    path = tmp_path / "empty.tsv"
    path.write_text("")
    with pytest.raises(CriteoFormatError, match=f"no usable line in {path}"):
        run_herald.read_file(CriteoReader(str(path)), None)


def test_an_avazu_file_with_no_usable_line_is_refused_with_the_avazu_format(tmp_path: Any
                                                                             ) -> None:
    path = tmp_path / "a.csv"
    write_synthetic_avazu(path, 0, seed=0)  # the header only
    with pytest.raises(AvazuFormatError, match="Expected Avazu CSV.*no usable line"):
        run_herald.read_file(AvazuReader(str(path)), None)


def test_skipped_lines_are_reported_with_their_count(tmp_path: Any) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD, "bad", GOOD, GOOD.replace("\t", ","), GOOD])
    warnings: list[str] = []
    batch = run_herald.read_file(CriteoReader(path), None, warn=warnings.append)
    assert len(batch) == 3
    assert len(warnings) == 1 and f"{path}: skipped 2 malformed lines" in warnings[0]


def test_a_clean_file_is_read_without_a_warning(tmp_path: Any) -> None:
    warnings: list[str] = []
    batch = run_herald.read_file(CriteoReader(_write(tmp_path / "a.tsv", [GOOD] * 5)), 3,
                                 warn=warnings.append)
    assert len(batch) == 3 and batch.keys.shape == (3, 26) and warnings == []


def test_strict_data_stops_at_the_first_bad_line_naming_it(parse: Any, tmp_path: Any) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD, "bad", GOOD])
    parse("--data", path, "--strict-data")
    with pytest.raises(CriteoFormatError, match=r"a\.tsv:2"):
        run_herald._load_data("criteo")


# -- the transport -------------------------------------------------------------------------------

def test_allreduce_builds_no_transport_and_needs_no_parameter_servers() -> None:
    assert run_herald.make_worker_transport("allreduce", "grpc", (), None) is None


@pytest.mark.parametrize("mode", ["ps", "het", "herald"])
def test_modes_with_a_ps_refuse_to_start_without_ps_addresses(mode: str) -> None:
    with pytest.raises(app.UsageError, match=f"Expected parameter servers for mode {mode}.*"
                       r"no addresses in \$HERALD_PS_ADDRS"):
        run_herald.make_worker_transport(mode, "grpc", (), "token")


def test_modes_with_a_ps_build_the_transport_asked_for() -> None:
    transport = run_herald.make_worker_transport("herald", "grpc", ("127.0.0.1:1",), "token")
    try:
        assert type(transport).__name__ == "GrpcTransport"
    finally:
        transport.close()
