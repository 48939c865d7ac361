"""The built core keeps the software prefetches of its batch loops over tables in memory.

GCC deletes calls to a helper whose only effect is ``__builtin_prefetch`` (its pure-const
analysis finds no side effect), silently: the results stay right and only the speed goes
(``HERALD_PREFETCH_HELPER`` in kernels/core/platform.h). The machine code is the only witness.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess

import pytest

from herald_tf import _core, env

# each loops over keys or rows that are scattered over a table larger than the caches
PREFETCHING = (
    "herald_ps_key_index_lookup",
    "herald_ps_key_index_lookup_distinct",
    "herald_ps_key_index_lookup_or_insert",
    "herald_ps_apply_rows",
    "herald_ps_send_rows",
    "herald_cpu_gather_rows",
)


def _prefetches_by_function(library: str) -> dict[str, int]:
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", library], check=True,
                          capture_output=True, text=True).stdout
    counts: dict[str, int] = {}
    function = None
    for line in text.splitlines():
        head = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if head:
            function = head.group(1)
            counts.setdefault(function, 0)
        elif function is not None and "prefetch" in line:
            counts[function] += 1
    return counts


@pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("objdump") is None,
                    reason="reads x86-64 machine code with objdump")
def test_batch_loops_over_tables_keep_their_prefetches() -> None:
    counts = _prefetches_by_function(os.path.join(env.lib_dir(), _core.CORE_LIBRARY))
    missing = [f for f in PREFETCHING if counts.get(f, 0) == 0]
    assert not missing, f"no prefetch instruction left in {missing}"
