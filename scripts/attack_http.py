#!/usr/bin/env python3
"""The HTTP API's attack scenarios (issue 10) against a running `kvroute serve`, each with
routing measured during it: p99 of /v1/route over a kept-alive connection (as Envoy's pool
calls it) and over fresh connections, the server's peak RSS (VmHWM) and open descriptors.
Prints one markdown table row per attack. Usage (scripts/attack_http.sh starts the server):

    attack_http.py --addr 127.0.0.1:PORT --pid PID --model NAME
"""

import argparse
import asyncio
import http.client
import json
import os
import resource
import socket
import statistics
import threading
import time


def status_of(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return int(out["VmRSS"].split()[0]) // 1024, int(out["VmHWM"].split()[0]) // 1024, fds


class Prober(threading.Thread):
    """Small /v1/route calls every 10 ms: kept-alive and on fresh connections."""

    def __init__(self, host, port, model, pid):
        super().__init__(daemon=True)
        self.host, self.port, self.model, self.pid = host, port, model, pid
        self.stop = threading.Event()
        self.kept, self.fresh, self.errors = [], [], 0
        self.error_kinds = {}
        self.peak_rss, self.peak_fds = 0, 0

    def call(self, conn):
        body = json.dumps({"model": self.model, "block_hashes": [1, 2, 3]})
        t = time.perf_counter()
        conn.request("POST", "/v1/route", body, {"content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(r.status)
        return time.perf_counter() - t

    def error(self, kind):
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def run(self):
        kept = http.client.HTTPConnection(self.host, self.port, timeout=10)
        n = 0
        while not self.stop.is_set():
            try:
                self.kept.append(self.call(kept))
            except Exception as e:
                self.error(f"kept-alive {type(e).__name__}")
                kept = http.client.HTTPConnection(self.host, self.port, timeout=10)
            if n % 5 == 0:
                try:
                    c = http.client.HTTPConnection(self.host, self.port, timeout=10)
                    self.fresh.append(self.call(c))
                    c.close()
                except Exception as e:
                    self.error(f"fresh {type(e).__name__}")
            try:
                _, hwm, fds = status_of(self.pid)
                self.peak_rss, self.peak_fds = max(self.peak_rss, hwm), max(self.peak_fds, fds)
            except OSError:
                pass
            n += 1
            time.sleep(0.01)


def pct(xs, q):
    """The q-th percentile of `xs` seconds, in milliseconds."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, len(xs) * q // 100)] * 1000


async def idle_flood(host, port, n, sources, hold):
    """n connections spread over `sources` addresses, sending nothing."""
    conns, refused = [], 0
    per = n // len(sources)
    for src in sources:
        for _ in range(per):
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(host, port, local_addr=(src, 0)), 5)
                conns.append(w)
            except Exception:
                refused += 1
    await asyncio.sleep(hold)
    closed = sum(1 for w in conns if w.is_closing() or w.transport.get_extra_info("socket") is None)
    for w in conns:
        w.close()
    return f"{len(conns)} opened, {refused} refused"


async def slowloris(host, port, n, hold):
    conns = []
    for i in range(n):
        try:
            r, w = await asyncio.open_connection(host, port, local_addr=(f"127.0.1.{i % 200 + 1}", 0))
            w.write(b"POST /v1/route HTTP/1.1\r\nhost: x\r\n")
            conns.append((r, w))
        except Exception:
            pass
    dropped = 0
    end = time.time() + hold
    while time.time() < end:
        for r, w in conns:
            try:
                w.write(b"x")
            except Exception:
                pass
        await asyncio.sleep(1)
    for r, w in conns:
        if r.at_eof() or w.is_closing():
            dropped += 1
        w.close()
    return f"{len(conns)} slow heads, {dropped} dropped by the server"


async def never_read_tokenizer(host, port, model, n, hold):
    conns = []
    for i in range(n):
        r, w = await asyncio.open_connection(host, port, local_addr=(f"127.0.2.{i % 200 + 1}", 0))
        w.write(f"GET /v1/tokenizers/{model}/tokenizer.json HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        conns.append(w)
    await asyncio.sleep(hold)
    for w in conns:
        w.close()
    return f"{n} clients that never read tokenizer.json"


async def post_loop(host, port, path, body, clients, hold, src_prefix):
    statuses = {}
    end = time.time() + hold

    async def one(i):
        while time.time() < end:
            try:
                r, w = await asyncio.open_connection(host, port, local_addr=(f"{src_prefix}.{i % 200 + 1}", 0))
                w.write(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode())
                w.write(body)
                await w.drain()
                line = await asyncio.wait_for(r.readline(), 30)
                code = line.split()[1].decode() if len(line.split()) > 1 else "closed"
                await r.read()
                w.close()
            except Exception as e:
                code = type(e).__name__
            statuses[code] = statuses.get(code, 0) + 1

    await asyncio.gather(*(one(i) for i in range(clients)))
    return ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))


async def oversized(host, port, path, declared, n):
    statuses = {}
    for _ in range(n):
        r, w = await asyncio.open_connection(host, port)
        w.write(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {declared}\r\n\r\n".encode())
        w.write(b"x" * 65536)
        try:
            line = await asyncio.wait_for(r.readline(), 10)
            code = line.split()[1].decode()
        except Exception as e:
            code = type(e).__name__
        w.close()
        statuses[code] = statuses.get(code, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))


def tickets_held(host, port):
    """Decisions in flight over all pods (each holds a ticket), from /v1/pods."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/v1/pods")
    pods = json.loads(conn.getresponse().read())["pods"]
    return sum(p["load"]["in_flight"] for p in pods)


def metric(host, port, name):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return next((l.split()[-1] for l in text.splitlines() if l.startswith(name)), "?")


async def tickets_flood(host, port, model, n, clients):
    """n route decisions never completed, from `clients` kept-alive connections."""
    left = [n]
    statuses = {}

    async def one(i):
        r, w = await asyncio.open_connection(host, port, local_addr=(f"127.0.7.{i + 1}", 0))
        while left[0] > 0:
            left[0] -= 1
            k = left[0]
            body = json.dumps({"model": model, "block_hashes": [k, k + 1, k + 2]}).encode()
            w.write(f"POST /v1/route HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
            status = (await r.readline()).split()[1].decode()
            length = 0
            while (line := await r.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await r.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
        w.close()

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    took = time.perf_counter() - t
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    held = tickets_held(host, port)
    evicted = metric(host, port, "kvroute_tickets_evicted_total")
    return f"{n:,} routes in {took:.0f} s ({codes}), never completed: {held:,} tickets held, {evicted} released early"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--hold", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--only", default="")
    # Past --max-tickets' default (65,536).
    ap.add_argument("--tickets", type=int, default=100000)
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    port = int(port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The flood's sockets and the prober's share this process's descriptors: leave the
    # prober room, or its fresh connections fail here (EMFILE), not at the server.
    if hard != resource.RLIM_INFINITY:
        a.connections = min(a.connections, hard - 256)

    big_prompt = json.dumps({"model": a.model, "messages": [
        {"role": "user", "content": "the quick brown fox jumps over the lazy dog " * 44000}]}).encode()
    hashes_95k = json.dumps({"model": a.model, "block_hashes": list(range(1, 95001))}).encode()
    attacks = [
        ("baseline (no attack)", lambda: asyncio.sleep(a.hold)),
        (f"{a.connections:,} idle connections from 20 addresses",
         lambda: idle_flood(host, port, a.connections, [f"127.0.3.{i}" for i in range(1, 21)], a.hold)),
        (f"{a.connections:,} idle connections from one address",
         lambda: idle_flood(host, port, a.connections, ["127.0.4.1"], a.hold)),
        ("2,000 slowloris heads (a byte a second)", lambda: slowloris(host, port, 2000, a.hold)),
        ("150 clients never reading tokenizer.json",
         lambda: never_read_tokenizer(host, port, a.model, 150, a.hold)),
        ("4 clients looping 1.9 MB /v1/route/prompt bodies",
         lambda: post_loop(host, port, "/v1/route/prompt?path=/v1/chat/completions", big_prompt, 4, a.hold, "127.0.5")),
        ("8 clients looping /v1/route with 95,000 hashes",
         lambda: post_loop(host, port, "/v1/route", hashes_95k, 8, a.hold, "127.0.6")),
        ("declared 1 GiB bodies on /v1/route/prompt (x200)",
         lambda: oversized(host, port, "/v1/route/prompt", 1 << 30, 200)),
        (f"{a.tickets:,} route decisions never completed (4 clients)",
         lambda: tickets_flood(host, port, a.model, a.tickets, 4)),
    ]
    print("| attack | what happened | /v1/route p50 / p99 kept-alive | p50 / p99 fresh connection "
          "| probe errors | peak RSS (since start) | peak fds |")
    print("|---|---|---|---|---|---|---|")
    for name, attack in attacks:
        if a.only and a.only not in name:
            continue
        probe = Prober(host, port, a.model, a.pid)
        probe.start()
        result = asyncio.run(attack()) or ""
        probe.stop.set()
        probe.join()
        if probe.error_kinds:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(probe.error_kinds.items()))
            result = f"{result}; probe errors {kinds}"
        print(f"| {name} | {result} | {pct(probe.kept, 50):.1f} / {pct(probe.kept, 99):.1f} ms | "
              f"{pct(probe.fresh, 50):.1f} / {pct(probe.fresh, 99):.1f} ms | "
              f"{probe.errors} of {len(probe.kept) + len(probe.fresh) + probe.errors} | "
              f"{probe.peak_rss} MiB | {probe.peak_fds} |", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main()
