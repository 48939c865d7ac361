"""examples/ctr/run_herald.py, the launcher's worker script: flags that cannot work are refused at
parsing, data files are mapped (their bad lines reported: tests/unit/data/test_samples.py), and
AllReduce needs no PS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from absl import app, flags

from examples.ctr import run_herald
from herald_tf.data import CriteoFormatError

GOOD = "\t".join(["1"] + ["3"] * 13 + ["68fd1e64"] * 26)


@pytest.fixture
def parse() -> Iterator[Any]:
    """Parses run_herald's flags from an argument list; unparses them afterwards."""

    def _parse(*argv: str) -> None:
        run_herald.FLAGS(["run_herald.py", *argv])

    yield _parse
    run_herald.FLAGS.unparse_flags()


def _write(path: Any, lines: list[str]) -> str:
    path.parent.mkdir(exist_ok=True)
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

def test_strict_data_stops_at_the_first_bad_line_naming_it(parse: Any, tmp_path: Any) -> None:
    path = _write(tmp_path / "a.tsv", [GOOD, "bad", GOOD])
    parse("--data", path, "--strict-data")
    with pytest.raises(CriteoFormatError, match=r"a\.tsv:2"):
        run_herald.load_samples("criteo")


def test_a_data_file_is_mapped_and_split_into_training_and_held_out(parse: Any,
                                                                     tmp_path: Any) -> None:
    path = _write(tmp_path / "data" / "a.tsv", [GOOD] * 10)
    parse("--data", path, "--all", "--val-fraction", "0.2", "--data-cache-dir", str(tmp_path))
    samples = run_herald.load_samples("criteo")
    assert isinstance(samples.data.keys, np.memmap)
    assert (samples.num_train, samples.num_held_out, samples.fields) == (8, 2, 26)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # the parsed copy unlinked


def test_keep_data_cache_keeps_the_parsed_copy_for_the_next_run(parse: Any,
                                                                 tmp_path: Any) -> None:
    path = _write(tmp_path / "data" / "a.tsv", [GOOD] * 10)
    parse("--data", path, "--all", "--data-cache-dir", str(tmp_path), "--keep-data-cache")
    first = run_herald.load_samples("criteo")
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name != "data")
    assert len(kept) == 2 and kept[0].startswith("herald-samples-")
    assert kept[1] == kept[0] + ".lock"
    second = run_herald.load_samples("criteo")
    assert second.data.keys.filename == first.data.keys.filename  # the same files, mapped again


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
