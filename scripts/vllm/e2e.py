#!/usr/bin/env python3
"""kvroute against REAL vLLM 0.32 engines on this machine: the scenarios of scripts/vllm_e2e.sh.

Why: the suite runs simulated engines; this runs the real engine (CPU build, scripts/vllm/)
under kvroute serve, the real Envoy and the filter, and changes the fleet under load the way
production does, reporting what a client sees. Processes: ENGINES real vLLM servers on
127.0.0.11.. port 8000 (scripts/vllm/run_server.sh), `kvroute serve` started here (so it can
be killed and restarted), and `local-stack --indexer` for Envoy with the filter (debug headers
on: x-kvroute-endpoint names the engine the filter picked). Scenarios:

  follow     P prefixes, two turns each: the second on the first's engine, from its cache
  kill       steady load; one engine SIGKILLed, then restarted: client errors, how long the
             dead engine was still routed to, how long after answering again it was routed to,
             requests routed on blocks it no longer had (matched > 0, cached 0)
  indexer    steady load; `kvroute serve` SIGKILLed and restarted: client errors, and whether
             second turns land again on their engines with matched blocks afterwards

Prints a table and writes OUT/results.json and OUT/results.md. Only the processes it started
are stopped (by process group). Stdlib only.
"""

import argparse
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
MODEL = "Qwen3-32B"
ENGINE_PORT = 8000
INDEXER = "127.0.0.1:8081"
ENVOY = "127.0.0.1:8090"
ENVOY_ADMIN = "127.0.0.1:9911"
ZMQ_BIND_PORT = 5557
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()


def log(msg):
    print(f"[vllm-e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def post(addr, path, body, timeout=120):
    """(status, headers, json or None, seconds); status 0 for a connection error."""
    t0 = time.time()
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(),
                                 method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read()), time.time() - t0
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), None, time.time() - t0
    except OSError:
        return 0, {}, None, time.time() - t0


def healthy(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class Proc:
    """A process in its own session, stopped with its whole group."""

    def __init__(self, name, argv, env, log_path):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.p = None

    def start(self):
        out = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.p and self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


class Fleet:
    def __init__(self, args, out):
        self.args, self.out = args, out
        self.engines = [f"127.0.0.{11 + i}" for i in range(args.engines)]
        self.procs = {}

    def engine_env(self, i):
        ip = self.engines[i]
        env = dict(os.environ, ROOT=self.args.vllm_root, HOST=ip, PORT=str(ENGINE_PORT),
                   HASH_ALGO=self.args.hash_algo, HASHSEED=self.args.hash_seed)
        if self.args.wiring == "dial":
            env["KV_ENDPOINT"] = f"tcp://*:{self.kv_port(i)}"
        else:
            env["KV_ENDPOINT"] = f"tcp://127.0.0.1:{ZMQ_BIND_PORT}"
        env["TOPIC"] = f"kv@{ip}@{MODEL}"
        return env

    def kv_port(self, i):
        # Every bound engine listens on all interfaces ('*'): one port each on one host.
        return 5557 + 10 * (i + 1)

    def start_engine(self, i):
        name = f"engine{i}"
        proc = Proc(name, ["bash", str(REPO / "scripts/vllm/run_server.sh")], self.engine_env(i),
                    self.out / f"{name}.log").start()
        self.procs[name] = proc
        return proc

    def indexer_argv(self):
        argv = [str(self.args.kvroute), "serve", "--listen", INDEXER,
                "--model", f"{MODEL}={self.args.vllm_root}/tiny-qwen3"]
        if self.args.hash_algo:
            argv += ["--hash-algo", self.args.hash_algo]
        if self.args.hash_seed:
            argv += ["--hash-seed", self.args.hash_seed]
        if self.args.wiring == "dial":
            for i, ip in enumerate(self.engines):
                argv += ["--engine", f"{ip}:{self.kv_port(i)}={ENGINE_PORT}"]
        else:
            argv += ["--zmq-bind", f"tcp://127.0.0.1:{ZMQ_BIND_PORT}", "--engine-port", str(ENGINE_PORT)]
            for ip in self.engines:
                argv += ["--engine", ip]
        return argv

    def start_indexer(self):
        proc = Proc("indexer", self.indexer_argv(), dict(os.environ, RUST_LOG="info"),
                    self.out / "indexer.log").start()
        self.procs["indexer"] = proc
        end = time.time() + 30
        while time.time() < end:
            try:
                with urllib.request.urlopen(f"http://{INDEXER}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return proc
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"kvroute serve did not become ready; see {self.out / 'indexer.log'}")

    def start_gateway(self):
        argv = [str(self.args.local_stack), "--indexer", INDEXER, "--filter", str(self.args.filter),
                "--listen", ENVOY, "--admin", ENVOY_ADMIN, "--model", MODEL,
                "--tokenizer", f"{self.args.vllm_root}/tiny-qwen3",
                "--summary", str(self.out / "local_stack_summary.json")]
        for ip in self.engines:
            argv += ["--vllm", f"http://{ip}:{ENGINE_PORT}"]
        proc = Proc("gateway", argv, dict(os.environ), self.out / "local_stack.log").start()
        self.procs["gateway"] = proc
        end = time.time() + 180
        while time.time() < end:
            if "Ctrl-C stops everything" in (self.out / "local_stack.log").read_text(errors="replace"):
                return proc
            if proc.p.poll() is not None:
                break
            time.sleep(1)
        raise SystemExit(f"local-stack did not come up; see {self.out / 'local_stack.log'}")

    def stop_all(self):
        for proc in reversed(list(self.procs.values())):
            proc.kill(signal.SIGTERM)


def chat(prefix_id, turn, words=260):
    rnd = random.Random(prefix_id)
    context = " ".join(rnd.choice(WORDS) for _ in range(words))
    messages = [{"role": "system", "content": f"Conversation {prefix_id}. Context: {context}"},
                {"role": "user", "content": f"Question {turn} about conversation {prefix_id}?"}]
    return {"model": MODEL, "messages": messages, "max_tokens": 2}


def outcome(status, headers, answer, seconds):
    usage = (answer or {}).get("usage") or {}
    return {"status": status, "seconds": round(seconds, 3),
            "engine": headers.get("x-kvroute-endpoint"),
            "matched": int(headers.get("x-kvroute-matched-blocks") or 0),
            "cached": ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")),
            "prompt_tokens": usage.get("prompt_tokens")}


def send(prefix_id, turn):
    return outcome(*post(ENVOY, "/v1/chat/completions", chat(prefix_id, turn)))


def follow(prefixes, first_id=0):
    """Turn 1 then turn 2 of each prefix; the second should land on the first's engine."""
    rows = []
    for p in range(first_id, first_id + prefixes):
        a = send(p, 1)
        time.sleep(0.5)  # the first turn's KV events reach the indexer
        b = send(p, 2)
        rows.append({"prefix": p, "first": a, "second": b,
                     "followed": a["engine"] is not None and a["engine"] == b["engine"]
                     and (b["cached"] or 0) > 0 and b["matched"] > 0})
    return rows


class Load(threading.Thread):
    """Steady load: RATE requests/s over a pool of prefixes (second turns mostly)."""

    def __init__(self, rate, prefixes):
        super().__init__(daemon=True)
        self.rate, self.prefixes = rate, prefixes
        self.results, self.stop_flag, self.t0 = [], threading.Event(), time.time()
        self.lock = threading.Lock()

    def run(self):
        n = 0
        threads = []
        while not self.stop_flag.is_set():
            due = self.t0 + n / self.rate
            time.sleep(max(0.0, due - time.time()))
            p = random.Random(n).randrange(self.prefixes)
            t = threading.Thread(target=self.one, args=(p, 2 + n % 5), daemon=True)
            t.start()
            threads.append(t)
            n += 1
        for t in threads:
            t.join(timeout=150)

    def one(self, prefix, turn):
        sent = time.time() - self.t0
        r = send(prefix, turn)
        r["sent"] = round(sent, 3)
        with self.lock:
            self.results.append(r)

    def stop(self):
        self.stop_flag.set()
        self.join()
        return sorted(self.results, key=lambda r: r["sent"])


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def summary(results):
    ok = [r for r in results if r["status"] == 200]
    return {"requests": len(results), "client_errors": len(results) - len(ok),
            "errors_by_status": {str(s): sum(1 for r in results if r["status"] == s)
                                 for s in sorted({r["status"] for r in results if r["status"] != 200})},
            "p50_s": pct([r["seconds"] for r in ok], 0.5), "p99_s": pct([r["seconds"] for r in ok], 0.99),
            "routed": sum(1 for r in ok if r["engine"])}


def scenario_kill(fleet, args):
    victim = 0
    dead = f"{fleet.engines[victim]}:{ENGINE_PORT}"
    load = Load(args.rate, args.prefixes)
    load.start()
    time.sleep(args.warmup)
    killed_at = time.time() - load.t0
    log(f"SIGKILL {dead} at t={killed_at:.1f}s")
    fleet.procs[f"engine{victim}"].kill(signal.SIGKILL)
    time.sleep(args.down)
    log(f"restarting {dead}")
    fleet.start_engine(victim)
    end = time.time() + 600
    while not healthy(dead):
        if time.time() > end:
            raise SystemExit(f"{dead} did not come back; see its log")
        time.sleep(0.5)
    answering_at = time.time() - load.t0
    log(f"{dead} answers /health at t={answering_at:.1f}s")
    time.sleep(args.after)
    results = load.stop()
    to_dead_after_kill = [r for r in results if killed_at <= r["sent"] < answering_at and r["engine"] == dead]
    back = [r for r in results if r["sent"] >= answering_at and r["engine"] == dead and r["status"] == 200]
    stale = [r for r in results if r["sent"] >= answering_at and r["engine"] == dead
             and r["status"] == 200 and r["matched"] > 0 and (r["cached"] or 0) == 0]
    s = summary(results)
    s.update({
        "killed_at_s": round(killed_at, 1), "answering_again_at_s": round(answering_at, 1),
        "routed_to_dead_engine": len(to_dead_after_kill),
        "dead_engine_last_routed_s_after_kill": round(max((r["sent"] for r in to_dead_after_kill), default=killed_at) - killed_at, 2),
        "errors_after_kill": sum(1 for r in results if r["sent"] >= killed_at and r["status"] != 200),
        "back_in_routing_s_after_answering": round(back[0]["sent"] - answering_at, 2) if back else None,
        "routed_on_lost_blocks": len(stale),
    })
    return s, results


def scenario_indexer(fleet, args):
    load = Load(args.rate, args.prefixes)
    load.start()
    time.sleep(args.warmup)
    killed_at = time.time() - load.t0
    log(f"SIGKILL kvroute serve at t={killed_at:.1f}s")
    fleet.procs["indexer"].kill(signal.SIGKILL)
    time.sleep(2)
    fleet.start_indexer()
    back_at = time.time() - load.t0
    log(f"kvroute serve ready again at t={back_at:.1f}s")
    time.sleep(args.after)
    results = load.stop()
    # Second turns of the first turns the old index learned: do they land with matched blocks?
    after = follow(args.prefixes, first_id=10_000)
    s = summary(results)
    s.update({"killed_at_s": round(killed_at, 1), "ready_again_at_s": round(back_at, 1),
              "errors_while_down": sum(1 for r in results if killed_at <= r["sent"] < back_at and r["status"] != 200),
              "routed_after_restart": sum(1 for r in results if r["sent"] >= back_at + 1 and r["engine"]),
              "matched_after_restart": sum(1 for r in results if r["sent"] >= back_at + 1 and r["matched"] > 0),
              "new_prefixes_followed_after_restart": f"{sum(r['followed'] for r in after)}/{len(after)}"})
    return s, results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "target/vllm_e2e")
    ap.add_argument("--vllm-root", default=os.environ.get("ROOT", str(pathlib.Path.home() / ".cache/kvroute-vllm")))
    ap.add_argument("--kvroute", type=pathlib.Path, default=REPO / "target/debug/kvroute")
    ap.add_argument("--local-stack", type=pathlib.Path, default=REPO / "target/debug/local-stack")
    ap.add_argument("--filter", type=pathlib.Path, default=REPO / "target/kvroute_filter.wasm")
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--wiring", choices=["dial", "bind"], default="dial",
                    help="dial: engines bind, the indexer connects; bind: engines connect to the indexer")
    ap.add_argument("--hash-algo", default="", help="engines' --prefix-caching-hash-algo ('' = vLLM's default)")
    ap.add_argument("--hash-seed", default="", help="engines' PYTHONHASHSEED ('' = unset)")
    ap.add_argument("--scenarios", default="follow,kill,indexer")
    ap.add_argument("--prefixes", type=int, default=8)
    ap.add_argument("--rate", type=float, default=4.0, help="requests/s of the steady load")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of load before a kill")
    ap.add_argument("--down", type=float, default=10.0, help="seconds an engine stays dead")
    ap.add_argument("--after", type=float, default=20.0, help="seconds of load after the return")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(args, args.out)
    report = {"date": time.strftime("%Y-%m-%d"), "engines": args.engines, "wiring": args.wiring,
              "hash_algo": args.hash_algo or "vLLM default (sha256)",
              "PYTHONHASHSEED": args.hash_seed or "unset", "rate_per_s": args.rate}
    try:
        if args.wiring == "bind":
            fleet.start_indexer()
        log(f"starting {args.engines} vLLM engines (1-3 minutes)")
        for i in range(args.engines):
            fleet.start_engine(i)
        end = time.time() + 600
        while not all(healthy(f"{ip}:{ENGINE_PORT}") for ip in fleet.engines):
            if time.time() > end:
                raise SystemExit("engines did not start; see the engine logs in " + str(args.out))
            time.sleep(2)
        if args.wiring == "dial":
            fleet.start_indexer()
        log("starting Envoy with the filter (local-stack --indexer)")
        fleet.start_gateway()
        report["local_stack"] = json.loads((args.out / "local_stack_summary.json").read_text())
        detail = {}
        for name in args.scenarios.split(","):
            log(f"scenario {name}")
            if name == "follow":
                rows = follow(args.prefixes)
                report["follow"] = {"prefixes": len(rows), "followed": sum(r["followed"] for r in rows),
                                    "second_turn_cached_tokens": [r["second"]["cached"] for r in rows]}
                detail["follow"] = rows
            elif name == "kill":
                report["kill"], detail["kill"] = scenario_kill(fleet, args)
            elif name == "indexer":
                report["indexer"], detail["indexer"] = scenario_indexer(fleet, args)
    finally:
        fleet.stop_all()
    (args.out / "results.json").write_text(json.dumps({"report": report, "detail": detail}, indent=1))
    lines = [f"# kvroute with real vLLM 0.32 ({report['date']}; {args.engines} engines, wiring {args.wiring}, "
             f"hashing {report['hash_algo']}, PYTHONHASHSEED {report['PYTHONHASHSEED']})", ""]
    ls = report.get("local_stack", {})
    lines.append(f"- seed example: round2 followed round1: {ls.get('round2_followed_round1')}")
    for key in ("follow", "kill", "indexer"):
        if key in report:
            lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in report[key].items()))
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
