#!/usr/bin/env python3
"""Load generator for scripts/bench-redis-cpu: EVALSHA calls over raw RESP, pipelined, on one hot
key or a random mix of keys. (redis-benchmark cannot send the binary argument the one-consume
script takes.) Only the Redis side is measured (INFO commandstats), so the client's own speed
does not enter the figure as long as it keeps Redis busy.

usage: redis-cpu-load.py PORT SHA CALLS KEYS PIPELINE NKEYS ARG...
  KEYS = 0 for one hot key, else the number of random keys; NKEYS = number of keys (1 or 2 keys
  of one item; more: a batch of NKEYS items, each on its own random key); an ARG 'hex:...' is
  sent as those bytes, 'hexrep:...' as those bytes repeated NKEYS times (one packed item per
  key); an ARG 'step:N' as a time in µs that starts at the real clock and grows by N per call
  (the scripts' explicit-time argument).
"""
import random
import socket
import sys
import time


def bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def main() -> None:
    port, sha, calls, nkeys_space, pipeline, nkeys = sys.argv[1:7]
    calls, nkeys_space, pipeline, nkeys = int(calls), int(nkeys_space), int(pipeline), int(nkeys)
    raw = sys.argv[7:]
    def arg(a: str) -> bytes:
        if a.startswith("hex:"):
            return bytes.fromhex(a[4:])
        if a.startswith("hexrep:"):
            return bytes.fromhex(a[7:]) * nkeys
        return a.encode()

    args = [arg(a) for a in raw]
    step = next((int(a[5:]) for a in raw if a.startswith("step:")), None)
    head = b"*%d\r\n" % (3 + nkeys + len(args)) + bulk(b"EVALSHA") + bulk(sha.encode()) + bulk(b"%d" % nkeys)
    rng = random.Random(7)
    clock = [int(time.time() * 1e6) + 1_000_000]

    def command() -> bytes:
        if nkeys > 2:
            keys = b"".join(
                bulk(b"tollgate:{%016d}l:k" % (rng.randrange(nkeys_space) if nkeys_space else 0))
                for _ in range(nkeys))
        else:
            n = rng.randrange(nkeys_space) if nkeys_space else 0
            keys = b"".join(bulk(b"tollgate:{%016d}%s:k" % (n, s)) for s in (b"x", b"y")[:nkeys])
        if step is None:
            return head + keys + b"".join(bulk(a) for a in args)
        clock[0] += step
        return head + keys + b"".join(
            bulk(b"%d" % clock[0] if r.startswith("step:") else a) for r, a in zip(raw, args))

    s = socket.create_connection(("127.0.0.1", int(port)))
    f = s.makefile("rb")
    sent = 0
    while sent < calls:
        n = min(pipeline, calls - sent)
        s.sendall(b"".join(command() for _ in range(n)))
        for _ in range(n):
            line = f.readline()
            if line[:1] == b"-":
                sys.exit("script error: " + line.decode(errors="replace").strip())
            if line[:1] == b"$":
                f.read(int(line[1:]) + 2)
            elif line[:1] == b"*":
                for _ in range(int(line[1:])):
                    f.readline()
        sent += n


if __name__ == "__main__":
    main()
