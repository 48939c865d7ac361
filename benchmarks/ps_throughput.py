"""PS throughput: pull and push of 4096 × 26 keys (dim 64) against 2 local herald-ps processes.

``pull``/``push`` use the ``grpc+tcp`` transport (bulk data over the PS's TCP data plane);
``grpc_pull``/``grpc_push`` make the same calls on the plain ``grpc`` transport. In the same
run, a raw TCP socket moves the same bytes between the client and 2 local socket server
processes (request: the keys, or keys + gradients; reply: the rows, or a 1-byte ack), as the
ceiling for this machine; and bare gRPC (2 echo servers with the PS's channel options and 4 MiB
messages, no PS logic) moves them too, to separate gRPC's own cost from herald's. Variants are
timed in alternation (medians). Writes benchmarks/results/ps_throughput.json with rows/s and
GB/s of each, ``pull_vs_raw_socket`` / ``push_vs_raw_socket`` (grpc+tcp throughput ÷ raw socket
throughput; goal ≥ 0.5 each), ``grpc_*_vs_raw_socket`` for the grpc transport, and the client's
and each server's CPU time per call, which shows where the time goes on a machine with 2 shared
cores. ``--quick`` runs fewer repetitions (≤ 60 s), same keys.

Bytes counted per operation: pull = keys sent + rows received (values float32 + an int64 version
per row, as the PS sends them); push = keys + gradients sent. Each push is a full SGD step on
the servers (one worker), each pull reads rows that exist. The raw socket
moves exactly the same number of bytes each way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import struct
import sys
import tempfile
import threading

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "distributed"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from common import interleaved_seconds  # noqa: E402

BATCH, FIELDS, DIM = 4096, 26, 64
RESULT = os.path.join(ROOT, "benchmarks", "results", "ps_throughput.json")
_HEADER = struct.Struct("<QQ")  # request bytes, reply bytes


def _recv_exact(sock: socket.socket, buf: memoryview) -> None:
    got = 0
    while got < len(buf):
        n = sock.recv_into(buf[got:])
        if n == 0:
            raise ConnectionError("peer closed")
        got += n


def raw_server(port_file: str) -> None:
    """A raw TCP server: reads a request of the announced size, sends a reply of the size."""
    srv = socket.create_server(("127.0.0.1", 0))
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    header = bytearray(_HEADER.size)
    buf = bytearray(1 << 20)
    reply = bytearray(1 << 20)
    while True:
        try:
            _recv_exact(conn, memoryview(header))
        except ConnectionError:
            return
        n_in, n_out = _HEADER.unpack(header)
        if len(buf) < n_in:
            buf = bytearray(n_in)
        if len(reply) < n_out:
            reply = bytearray(n_out)
        _recv_exact(conn, memoryview(buf)[:n_in])
        conn.sendall(memoryview(reply)[:n_out])


def grpc_echo_server(port_file: str) -> None:
    """A bare gRPC server with the PS's options: no PS logic, raw bytes in 4 MiB messages."""
    from concurrent import futures

    import grpc

    from herald_tf.transport import wire

    ident = lambda b: b  # noqa: E731
    cache: dict[int, bytes] = {}

    def pull(request: bytes, context: object):
        n = int(request.decode())
        if n not in cache:
            cache[n] = b"\0" * n
        data = memoryview(cache[n])
        for b in range(0, n, wire.DEFAULT_CHUNK_BYTES):
            yield bytes(data[b:b + wire.DEFAULT_CHUNK_BYTES])

    def push(requests, context: object) -> bytes:
        for _ in requests:
            pass
        return b"1"

    server = grpc.server(futures.ThreadPoolExecutor(8), options=wire.GRPC_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("echo", {
        "Pull": grpc.unary_stream_rpc_method_handler(pull, ident, ident),
        "Push": grpc.stream_unary_rpc_method_handler(push, ident, ident)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(port_file + ".tmp", port_file)
    server.wait_for_termination()


class GrpcEchoClient:
    """Moves the same bytes through bare gRPC, to each echo server in parallel."""

    def __init__(self, ports: list[int]) -> None:
        import grpc

        from herald_tf.transport import wire

        ident = lambda b: b  # noqa: E731
        self.chunk = wire.DEFAULT_CHUNK_BYTES
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{p}", options=wire.GRPC_OPTIONS)
                         for p in ports]
        self.pulls = [c.unary_stream("/echo/Pull", ident, ident) for c in self.channels]
        self.pushes = [c.stream_unary("/echo/Push", ident, ident) for c in self.channels]

    def exchange(self, payloads: list[bytes], reply_sizes: list[int]) -> None:
        def one(i: int) -> None:
            if reply_sizes[i] > 1:  # a pull: send the keys, receive the rows
                self.pushes[i](iter([payloads[i]]))
                for _ in self.pulls[i](str(reply_sizes[i]).encode()):
                    pass
            else:
                view = memoryview(payloads[i])
                self.pushes[i](bytes(view[b:b + self.chunk])
                               for b in range(0, len(view), self.chunk))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(self.pulls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close(self) -> None:
        for c in self.channels:
            c.close()


class RawClient:
    """Moves (request, reply) byte counts to each raw server in parallel, one thread each."""

    def __init__(self, ports: list[int]) -> None:
        self.socks = []
        for p in ports:
            s = socket.create_connection(("127.0.0.1", p))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(s)

    def exchange(self, payloads: list[bytes], reply_sizes: list[int]) -> None:
        def one(i: int) -> None:
            s = self.socks[i]
            s.sendall(_HEADER.pack(len(payloads[i]), reply_sizes[i]))
            s.sendall(payloads[i])
            reply = bytearray(reply_sizes[i])
            _recv_exact(s, memoryview(reply))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(self.socks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_call(fn, reps: int, server_pids: list[int]) -> dict:
    """Client and server CPU milliseconds per call (where the time goes on 2 shared cores)."""
    before = [_cpu_s(p) for p in [os.getpid(), *server_pids]]
    for _ in range(reps):
        fn()
    after = [_cpu_s(p) for p in [os.getpid(), *server_pids]]
    ms = [round(1e3 * (a - b) / reps, 1) for a, b in zip(after, before, strict=True)]
    return {"client_cpu_ms": ms[0], "server_cpu_ms": ms[1:]}


def main() -> int:
    """Runs the benchmark and writes the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (<= 60 s)")
    ap.add_argument("--raw-server", help=argparse.SUPPRESS)
    ap.add_argument("--grpc-echo-server", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=RESULT)
    args = ap.parse_args()
    if args.raw_server:
        raw_server(args.raw_server)
        return 0
    if args.grpc_echo_server:
        grpc_echo_server(args.grpc_echo_server)
        return 0

    from ps_cluster import PsCluster, start_process

    from herald_tf.config import OptimizerConfig, TableConfig
    from herald_tf.ps.sharding import split_by_shard

    reps = 5 if args.quick else 15
    n = BATCH * FIELDS
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 2**62, size=n + 1000, dtype=np.int64))[:n]
    keys = rng.permutation(keys)
    grads = rng.normal(size=(n, DIM)).astype(np.float32)
    cfg = TableConfig("emb", DIM, seed=1, optimizer=OptimizerConfig("sgd", learning_rate=0.01))
    results: dict = {"batch": BATCH, "fields": FIELDS, "dim": DIM, "keys": n, "servers": 2,
                     "repetitions": reps, "cpus": os.cpu_count(),
                     "machine": platform.machine(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = PsCluster(2, tmp, num_workers=1).start()
        raw_procs = []
        try:
            t = cluster.transport("grpc+tcp")
            g = cluster.transport("grpc")
            t.connect([cfg], num_workers=1)
            step = [0]

            def push(tr=t) -> None:
                tr.push(step[0], 0, {"emb": (keys, grads)}, {"emb": 0.01}).wait()
                step[0] += 1

            push()  # creates every row, so pulls read existing rows

            ports: dict[str, list[int]] = {"raw": [], "echo": []}
            for kind, flag in (("raw", "--raw-server"), ("echo", "--grpc-echo-server")):
                for i in range(2):
                    pf = os.path.join(tmp, f"{kind}-{i}.port")
                    proc, port = start_process([sys.executable, os.path.abspath(__file__),
                                                flag, pf], pf,
                                               os.path.join(tmp, f"{kind}-{i}.log"))
                    raw_procs.append(proc)
                    ports[kind].append(port)
            raw = RawClient(ports["raw"])
            echo = GrpcEchoClient(ports["echo"])
            parts = split_by_shard(keys, 2)
            key_bytes = [keys[p].tobytes() for p in parts]
            pull_reply = [len(p) * (4 * DIM + 8) for p in parts]
            push_bytes = [keys[p].tobytes() + grads[p].tobytes() for p in parts]
            secs = interleaved_seconds({
                "pull": lambda: t.pull("emb", keys).wait(),
                "grpc_pull": lambda: g.pull("emb", keys).wait(),
                "raw_socket_pull": lambda: raw.exchange(key_bytes, pull_reply),
                "push": push,
                "grpc_push": lambda: push(g),
                "raw_socket_push": lambda: raw.exchange(push_bytes, [1, 1]),
                "bare_grpc_pull": lambda: echo.exchange(key_bytes, pull_reply),
                "bare_grpc_push": lambda: echo.exchange(push_bytes, [1, 1]),
            }, reps, warmup=1)
            cpu = {"pull": cpu_per_call(lambda: t.pull("emb", keys).wait(), reps, cluster.pids),
                   "push": cpu_per_call(push, reps, cluster.pids),
                   "grpc_pull": cpu_per_call(lambda: g.pull("emb", keys).wait(), reps,
                                             cluster.pids),
                   "grpc_push": cpu_per_call(lambda: push(g), reps, cluster.pids),
                   "raw_socket_pull": cpu_per_call(lambda: raw.exchange(key_bytes, pull_reply),
                                                   reps, [p.pid for p in raw_procs[:2]]),
                   "raw_socket_push": cpu_per_call(lambda: raw.exchange(push_bytes, [1, 1]),
                                                   reps, [p.pid for p in raw_procs[:2]]),
                   "bare_grpc_pull": cpu_per_call(lambda: echo.exchange(key_bytes, pull_reply),
                                                  reps, [p.pid for p in raw_procs[2:]]),
                   "bare_grpc_push": cpu_per_call(lambda: echo.exchange(push_bytes, [1, 1]),
                                                  reps, [p.pid for p in raw_procs[2:]])}
            raw.close()
            echo.close()
        finally:
            cluster.stop()
            for p in raw_procs:
                p.kill()
                p.wait()
    pull_bytes = n * 8 + n * (4 * DIM + 8)
    push_total = n * 8 + n * 4 * DIM
    results["transport"] = "grpc+tcp"
    for name, nbytes in (("pull", pull_bytes), ("push", push_total),
                         ("grpc_pull", pull_bytes), ("grpc_push", push_total),
                         ("raw_socket_pull", pull_bytes), ("raw_socket_push", push_total),
                         ("bare_grpc_pull", pull_bytes), ("bare_grpc_push", push_total)):
        results[name] = {"seconds": round(secs[name], 5), "rows_per_s": round(n / secs[name]),
                         "gb_per_s": round(nbytes / secs[name] / 1e9, 4), "bytes": nbytes,
                         **cpu[name]}
    results["pull_vs_raw_socket"] = round(secs["raw_socket_pull"] / secs["pull"], 4)
    results["push_vs_raw_socket"] = round(secs["raw_socket_push"] / secs["push"], 4)
    results["grpc_pull_vs_raw_socket"] = round(secs["raw_socket_pull"] / secs["grpc_pull"], 4)
    results["grpc_push_vs_raw_socket"] = round(secs["raw_socket_push"] / secs["grpc_push"], 4)
    # context, not goals: how far bare gRPC itself is from the socket on this machine
    results["bare_grpc_pull_vs_raw_socket"] = round(secs["raw_socket_pull"]
                                                    / secs["bare_grpc_pull"], 4)
    results["bare_grpc_push_vs_raw_socket"] = round(secs["raw_socket_push"]
                                                    / secs["bare_grpc_push"], 4)
    results["goal"] = {"pull_vs_raw_socket": 0.5, "push_vs_raw_socket": 0.5}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print(f"{'op':<18}{'ms':>9}{'Mrows/s':>10}{'GB/s':>8}{'client CPU ms':>15}"
          f"{'server CPU ms':>16}")
    for name in ("pull", "grpc_pull", "bare_grpc_pull", "raw_socket_pull", "push", "grpc_push",
                 "bare_grpc_push", "raw_socket_push"):
        r = results[name]
        servers = "+".join(f"{x:.0f}" for x in r["server_cpu_ms"])
        print(f"{name:<18}{1e3 * r['seconds']:>9.1f}{r['rows_per_s'] / 1e6:>10.2f}"
              f"{r['gb_per_s']:>8.2f}{r['client_cpu_ms']:>15.1f}{servers:>16}")
    print(f"grpc+tcp: pull_vs_raw_socket = {results['pull_vs_raw_socket']:.2f}   "
          f"push_vs_raw_socket = {results['push_vs_raw_socket']:.2f}   (goal >= 0.5)")
    print(f"grpc: pull {results['grpc_pull_vs_raw_socket']:.2f}, "
          f"push {results['grpc_push_vs_raw_socket']:.2f}")
    print(f"bare gRPC vs raw socket: pull {results['bare_grpc_pull_vs_raw_socket']:.2f}, "
          f"push {results['bare_grpc_push_vs_raw_socket']:.2f} (the ceiling of a gRPC path here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
