"""The exact shell commands of a launch: ssh for remote processes, a shell line for local ones.

A remote process runs as ``ssh [options] HOST SCRIPT``. The script (POSIX sh) ``cd``s into the
launcher's directory, reads the cluster token from its standard input (so it never appears in a
process listing or in ``--dry-run`` output), exports it as ``HERALD_TOKEN`` and
``HERALD_PS_TOKEN``, starts the program with the spec's environment, and watches its standard
input: when the local ssh process ends (the launcher stopped it, or died), the channel closes and
the program gets SIGTERM, so no remote process outlives the launch. When the program exits
first, the watcher is stopped too (nothing keeps the channel open). The exit status is the
program's.
"""

from __future__ import annotations

import shlex

from herald_tf import env
from herald_tf.launch.plan import LaunchOptions, ProcessSpec


def env_argv(spec: ProcessSpec) -> list[str]:
    """``env K=V ... argv``: the spec's program with its environment, as one argv."""
    return ["env", *(f"{k}={v}" for k, v in sorted(spec.env.items())), *spec.argv]


def remote_script(spec: ProcessSpec, workdir: str | None) -> str:
    """The POSIX sh script ssh runs on the remote host for ``spec`` (see the module doc)."""
    parts = []
    if workdir:
        parts.append(f"cd {shlex.quote(workdir)} || exit 1")
    parts += [
        "exec 3<&0",
        f"read -r {env.TOKEN_VAR} <&3 || exit 1",
        f'export {env.TOKEN_VAR} {env.PS_TOKEN_VAR}="${env.TOKEN_VAR}"',
        shlex.join(env_argv(spec)) + " </dev/null & child=$!",
        "{ trap 'kill $cat; exit 0' TERM; cat <&3 >/dev/null & cat=$!; wait $cat; "
        "kill -TERM $child; } >/dev/null 2>&1 & watcher=$!",
        "wait $child; code=$?",
        "kill $watcher 2>/dev/null",
        "exit $code",
    ]
    return "; ".join(parts)


def ssh_command(spec: ProcessSpec, options: LaunchOptions) -> list[str]:
    """The local argv that runs ``spec`` on its remote host (token written to its stdin)."""
    return [*options.ssh, spec.host, remote_script(spec, options.workdir)]


def local_command(spec: ProcessSpec) -> list[str]:
    """The local argv of a local spec (``env K=V ... argv``; the runner sets env directly)."""
    return env_argv(spec)


def describe(spec: ProcessSpec, options: LaunchOptions) -> str:
    """One line for ``--dry-run``: ``[name] <shell command>``, runnable as printed."""
    argv = ssh_command(spec, options) if spec.remote else local_command(spec)
    note = "  # token on stdin" if spec.remote else ""
    return f"[{spec.name}] {shlex.join(argv)}{note}"
