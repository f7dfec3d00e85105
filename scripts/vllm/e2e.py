#!/usr/bin/env python3
"""kvroute against REAL vLLM 0.32 engines on this machine: the scenarios of scripts/vllm_e2e.sh.

Why: the suite runs simulated engines; this runs the real engine (CPU build, scripts/vllm/)
under kvroute serve, the real Envoy and the filter, and changes the fleet under load the way
production does, reporting what a client sees. Processes: ENGINES real vLLM servers on
127.0.0.11.. port 8000 (scripts/vllm/run_server.sh, each with a replay socket on port 5558),
`kvroute serve` started here (so it can be killed and restarted), and `local-stack --indexer`
for Envoy with the filter (debug headers on: x-kvroute-endpoint names the engine the filter
picked). Scenarios:

  follow     P prefixes, two turns each: the second on the first's engine, from its cache
  kill       steady load; one engine SIGKILLed, then restarted
  term       the same with SIGTERM
  late       the indexer and Envoy restarted without one engine, which starts --late seconds
             later under steady load (it was never seen before)
  ghost      steady load with an engine listed to the indexer and Envoy that never exists
             (127.0.0.x past the real ones; listed from the start whenever this scenario runs)
  indexer    steady load; `kvroute serve` SIGKILLed and restarted: client errors, and whether
             second turns land again on their engines with matched blocks afterwards

Every engine scenario reports the same measures of the engine that was absent: client
errors; how long after it went away the indexer still had it up and the filter still picked
it; how long after it answered /health again the indexer had it up and it took its first
routed request; requests routed to it on blocks it no longer had (matched > 0, cached 0).
The steady load mixes second turns of a pool of conversations with a new conversation every
NEW_EVERY-th request (new conversations are what a returning, empty engine gets first).

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
REPLAY_PORT = 5558
INDEXER = "127.0.0.1:8081"
ENVOY = "127.0.0.1:8090"
ENVOY_ADMIN = "127.0.0.1:9911"
ZMQ_BIND_PORT = 5557
NEW_EVERY = 4
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()
SCENARIOS = ("follow", "kill", "term", "late", "ghost", "indexer")


def log(msg):
    print(f"[vllm-e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def post(addr, path, body, timeout=120):
    """(status, headers, json answer or the error's text, seconds); status 0 for a
    connection error."""
    t0 = time.time()
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(),
                                 method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read()), time.time() - t0
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()[:200].decode(errors="replace"), time.time() - t0
    except OSError as e:
        return 0, {}, str(e), time.time() - t0


def get(addr, path, timeout=2):
    """The body of a 200 answer, or None."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as r:
            return r.read() if r.status == 200 else None
    except OSError:
        return None


def healthy(addr):
    return get(addr, "/health") is not None


def wait_healthy(addr, limit=600):
    """Polls /health every 0.1 s; the time.time() it first answered."""
    end = time.time() + limit
    while not healthy(addr):
        if time.time() > end:
            raise SystemExit(f"{addr} did not answer /health within {limit} s; see its log")
        time.sleep(0.1)
    return time.time()


def indexer_metric(name):
    text = (get(INDEXER, "/metrics") or b"").decode(errors="replace")
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


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
        # The ghost: listed to the indexer and Envoy, never started.
        self.ghost = f"127.0.0.{11 + args.engines}" if "ghost" in args.scenarios else None
        self.procs = {}

    def listed(self):
        """Every engine the indexer and Envoy are told about, the ghost included."""
        return self.engines + ([self.ghost] if self.ghost else [])

    def endpoint(self, i):
        return f"{self.engines[i]}:{ENGINE_PORT}"

    def engine_env(self, i):
        ip = self.engines[i]
        env = dict(os.environ, ROOT=self.args.vllm_root, HOST=ip, PORT=str(ENGINE_PORT),
                   HASH_ALGO=self.args.hash_algo, HASHSEED=self.args.hash_seed,
                   REPLAY=f"tcp://{ip}:{REPLAY_PORT}", NUM_BLOCKS=str(self.args.num_blocks))
        if self.args.wiring == "dial":
            env["KV_ENDPOINT"] = f"tcp://*:{self.kv_port(i)}"
        else:
            # libzmq's source;destination form: the connection comes from the engine's own
            # IP, as from a pod, for the indexer believes a topic only from its engine's
            # address (from 127.0.0.1 every message would count as spoofed).
            env["KV_ENDPOINT"] = f"tcp://{ip}:0;127.0.0.1:{ZMQ_BIND_PORT}"
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

    def stop_engine(self, i, sig):
        self.procs[f"engine{i}"].kill(sig)

    def indexer_argv(self):
        argv = [str(self.args.kvroute), "serve", "--listen", INDEXER,
                "--model", f"{MODEL}={self.args.vllm_root}/tiny-qwen3", "--replay-port", str(REPLAY_PORT)]
        if self.args.hash_algo:
            argv += ["--hash-algo", self.args.hash_algo]
        if self.args.hash_seed:
            argv += ["--hash-seed", self.args.hash_seed]
        if self.args.wiring == "dial":
            for i, ip in enumerate(self.listed()):
                argv += ["--engine", f"{ip}:{self.kv_port(i)}={ENGINE_PORT}"]
        else:
            argv += ["--zmq-bind", f"tcp://127.0.0.1:{ZMQ_BIND_PORT}", "--engine-port", str(ENGINE_PORT)]
            for ip in self.listed():
                argv += ["--engine", ip]
        return argv

    def start_indexer(self):
        proc = Proc("indexer", self.indexer_argv(), dict(os.environ, RUST_LOG="info"),
                    self.out / "indexer.log").start()
        self.procs["indexer"] = proc
        end = time.time() + 30
        while time.time() < end:
            if get(INDEXER, "/readyz", timeout=1) is not None:
                return proc
            time.sleep(0.2)
        raise SystemExit(f"kvroute serve did not become ready; see {self.out / 'indexer.log'}")

    def start_gateway(self):
        argv = [str(self.args.local_stack), "--indexer", INDEXER, "--filter", str(self.args.filter),
                "--listen", ENVOY, "--admin", ENVOY_ADMIN, "--model", MODEL,
                "--tokenizer", f"{self.args.vllm_root}/tiny-qwen3",
                "--summary", str(self.out / "local_stack_summary.json")]
        if self.args.hash_seed:  # the filter hashes requests as the indexer keys them
            argv += ["--hash-seed", self.args.hash_seed]
        for ip in self.listed():
            argv += ["--vllm", f"http://{ip}:{ENGINE_PORT}"]
        log_path = self.out / "local_stack.log"
        seen = log_path.stat().st_size if log_path.exists() else 0  # a restart appends
        proc = Proc("gateway", argv, dict(os.environ), log_path).start()
        self.procs["gateway"] = proc
        end = time.time() + 180
        while time.time() < end:
            with open(log_path, "rb") as f:
                f.seek(seen)
                if b"Ctrl-C stops everything" in f.read():
                    return proc
            if proc.p.poll() is not None:
                break
            time.sleep(1)
        raise SystemExit(f"local-stack did not come up; see {log_path}")

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
    ok = isinstance(answer, dict)
    usage = (answer.get("usage") if ok else None) or {}
    r = {"status": status, "seconds": round(seconds, 3),
         "engine": headers.get("x-kvroute-endpoint"),
         "matched": int(headers.get("x-kvroute-matched-blocks") or 0),
         "cached": ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")),
         "prompt_tokens": usage.get("prompt_tokens")}
    if status != 200:
        r["error"] = answer if not ok else None
    return r


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
    """Steady load: RATE requests/s; every NEW_EVERY-th a new conversation, the others later
    turns of a pool of PREFIXES conversations."""

    def __init__(self, rate, prefixes):
        super().__init__(daemon=True)
        self.rate, self.prefixes = rate, prefixes
        self.results, self.stop_flag, self.t0 = [], threading.Event(), time.time()
        self.lock = threading.Lock()
        self.first_new = random.randrange(1 << 20, 1 << 30)  # new conversations of this load only

    def run(self):
        n = 0
        threads = []
        while not self.stop_flag.is_set():
            due = self.t0 + n / self.rate
            time.sleep(max(0.0, due - time.time()))
            if n % NEW_EVERY == 0:
                prefix, turn = self.first_new + n, 1
            else:
                prefix, turn = random.Random(n).randrange(self.prefixes), 2 + n % 5
            t = threading.Thread(target=self.one, args=(prefix, turn), daemon=True)
            t.start()
            threads.append(t)
            n += 1
        for t in threads:
            t.join(timeout=150)

    def one(self, prefix, turn):
        sent = time.time() - self.t0
        r = send(prefix, turn)
        r.update(sent=round(sent, 3), prefix=prefix)
        with self.lock:
            self.results.append(r)

    def at(self):
        """Seconds since the load started."""
        return time.time() - self.t0

    def stop(self):
        self.stop_flag.set()
        self.join()
        return sorted(self.results, key=lambda r: r["sent"])


class Watch(threading.Thread):
    """The indexer's view of every engine's health (/v1/pods every 0.1 s): transitions as
    (seconds since the load started, endpoint, health)."""

    def __init__(self, t0):
        super().__init__(daemon=True)
        self.t0, self.stop_flag, self.transitions, self.last = t0, threading.Event(), [], {}

    def run(self):
        while not self.stop_flag.is_set():
            body = get(INDEXER, "/v1/pods", timeout=1)
            now = time.time() - self.t0
            for pod in (json.loads(body).get("pods", []) if body else []):
                if self.last.get(pod["endpoint"]) != pod["health"]:
                    self.last[pod["endpoint"]] = pod["health"]
                    self.transitions.append((round(now, 2), pod["endpoint"], pod["health"]))
            time.sleep(0.1)

    def stop(self):
        self.stop_flag.set()
        self.join()
        return self.transitions


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
            "errors_by_text": {t: sum(1 for r in results if r.get("error") and r["error"][:60] == t)
                               for t in sorted({r["error"][:60] for r in results if r.get("error")})},
            "p50_s": pct([r["seconds"] for r in ok], 0.5), "p99_s": pct([r["seconds"] for r in ok], 0.99),
            "routed": sum(1 for r in ok if r["engine"])}


def absence(results, transitions, engine, gone_at, answering_at):
    """The measures of an engine absent from gone_at until it answered /health at
    answering_at (None: it never did) under the load that gave results."""
    until = answering_at if answering_at is not None else float("inf")
    picked_while_gone = [r for r in results if gone_at <= r["sent"] < until and r["engine"] == engine]
    mine = [(t, h) for t, e, h in transitions if e == engine]
    up_before = [t for t, h in mine if t < gone_at and h == "up"]
    out = next((t for t, h in mine if t >= gone_at and h != "up"), None)
    s = {"gone_at_s": round(gone_at, 1),
         "routed_to_it_while_gone": len(picked_while_gone),
         "last_routed_s_after_gone": round(max(r["sent"] for r in picked_while_gone) - gone_at, 2)
         if picked_while_gone else None,
         "indexer_marked_down_s_after_gone": (round(out - gone_at, 2) if out is not None else None)
         if up_before else "never up",
         "errors_while_gone": sum(1 for r in results if gone_at <= r["sent"] < until and r["status"] != 200),
         # Requests the engine had accepted when it went: lost with it whatever routed them
         # (Envoy retries only what never reached an engine).
         "errors_in_flight_when_gone": sum(1 for r in results if r["sent"] < gone_at
                                           and r["sent"] + r["seconds"] >= gone_at and r["status"] != 200)}
    if answering_at is None:
        return s
    back = [r for r in results if r["sent"] >= answering_at and r["engine"] == engine and r["status"] == 200]
    up = next((t for t, h in mine if t >= answering_at - 1 and h == "up"), None)
    s.update({
        "answering_at_s": round(answering_at, 1),
        "indexer_up_s_after_answering": round(up - answering_at, 2) if up is not None else None,
        "first_routed_s_after_answering": round(back[0]["sent"] - answering_at, 2) if back else None,
        "routed_to_it_after": len(back),
        "routed_on_lost_blocks": sum(1 for r in back if r["matched"] > 0 and (r["cached"] or 0) == 0),
    })
    return s


def measured(args, outage, engine):
    """Runs outage(load) under steady load, then --after seconds more; outage returns when
    the engine went away and when it answered again (seconds of the load). The scenario's
    report and its requests."""
    load = Load(args.rate, args.prefixes)
    watch = Watch(load.t0)
    watch.start()
    load.start()
    gone_at, answering_at = outage(load)
    time.sleep(args.after)
    results = load.stop()
    transitions = watch.stop()
    s = summary(results)
    s.update(absence(results, transitions, engine, gone_at, answering_at))
    return s, {"requests": results, "health": transitions}


def scenario_signal(fleet, args, sig):
    """An engine stopped by sig under steady load, then restarted."""
    victim = 0
    dead = fleet.endpoint(victim)

    def outage(load):
        time.sleep(args.warmup)
        gone_at = load.at()
        log(f"{sig.name} {dead} at t={gone_at:.1f}s")
        fleet.stop_engine(victim, sig)
        time.sleep(args.down)
        log(f"restarting {dead}")
        fleet.start_engine(victim)
        answering_at = wait_healthy(dead) - load.t0
        log(f"{dead} answers /health at t={answering_at:.1f}s")
        return gone_at, answering_at

    return measured(args, outage, dead)


def scenario_late(fleet, args):
    """The indexer and Envoy start without the last engine; it starts --late s later."""
    late = len(fleet.engines) - 1
    endpoint = fleet.endpoint(late)
    log(f"stopping {endpoint}, Envoy and kvroute serve; starting the last two without it")
    fleet.stop_engine(late, signal.SIGTERM)
    fleet.procs["gateway"].kill(signal.SIGTERM)
    fleet.procs["indexer"].kill(signal.SIGTERM)
    fleet.start_indexer()
    fleet.start_gateway()

    def outage(load):
        time.sleep(args.late)
        log(f"starting {endpoint} at t={load.at():.1f}s")
        fleet.start_engine(late)
        answering_at = wait_healthy(endpoint) - load.t0
        log(f"{endpoint} answers /health at t={answering_at:.1f}s")
        return 0.0, answering_at

    return measured(args, outage, endpoint)


def scenario_ghost(fleet, args):
    """Steady load with the ghost listed from the start: it must never be picked."""
    endpoint = f"{fleet.ghost}:{ENGINE_PORT}"

    def outage(load):
        time.sleep(args.warmup)
        return 0.0, None

    return measured(args, outage, endpoint)


def scenario_indexer(fleet, args):
    """kvroute serve SIGKILLed under steady load and restarted: the engines' replay sockets
    give it their caches back."""
    load = Load(args.rate, args.prefixes)
    load.start()
    time.sleep(args.warmup)
    killed_at = load.at()
    log(f"SIGKILL kvroute serve at t={killed_at:.1f}s")
    fleet.procs["indexer"].kill(signal.SIGKILL)
    time.sleep(2)
    fleet.start_indexer()
    back_at = load.at()
    log(f"kvroute serve ready again at t={back_at:.1f}s")
    time.sleep(args.after)
    results = load.stop()
    relearns = indexer_metric("kvroute_kv_relearns_total")
    after = follow(args.prefixes, first_id=10_000)
    s = summary(results)
    s.update({"killed_at_s": round(killed_at, 1), "ready_again_at_s": round(back_at, 1),
              "errors_while_down": sum(1 for r in results if killed_at <= r["sent"] < back_at and r["status"] != 200),
              "relearns": relearns})
    s.update(relearned(results, killed_at, back_at))
    s["new_prefixes_followed_after_restart"] = f"{sum(r['followed'] for r in after)}/{len(after)}"
    return s, {"requests": results, "follow": after}


def relearned(results, killed_at, back_at):
    """How the restarted indexer routes conversations the engines cached before the kill:
    picked on matched blocks (not a tie-break) onto an engine that served them from cache."""
    before = {r["prefix"] for r in results if r["sent"] < killed_at and r["status"] == 200}
    old_after = [r for r in results if r["sent"] >= back_at and r["prefix"] in before]
    on_cache = [r for r in old_after if r["engine"] and r["matched"] > 0 and (r["cached"] or 0) > 0]
    first = next((r["sent"] for r in old_after if r["matched"] > 0), None)
    return {"first_matched_s_after_ready": round(first - back_at, 2) if first is not None else None,
            "old_conversations_routed_on_matched_blocks_from_cache": f"{len(on_cache)}/{len(old_after)}"}


def run_scenario(name, fleet, args):
    """(report, detail) of one scenario."""
    if name == "follow":
        rows = follow(args.prefixes)
        return ({"prefixes": len(rows), "followed": sum(r["followed"] for r in rows),
                 "second_turn_cached_tokens": [r["second"]["cached"] for r in rows]}, rows)
    if name == "kill":
        return scenario_signal(fleet, args, signal.SIGKILL)
    if name == "term":
        return scenario_signal(fleet, args, signal.SIGTERM)
    if name == "late":
        return scenario_late(fleet, args)
    if name == "ghost":
        return scenario_ghost(fleet, args)
    return scenario_indexer(fleet, args)


def start_fleet(fleet, args):
    if args.wiring == "bind":
        fleet.start_indexer()
    log(f"starting {args.engines} vLLM engines (1-3 minutes)")
    for i in range(args.engines):
        fleet.start_engine(i)
    for i in range(args.engines):
        wait_healthy(fleet.endpoint(i))
    if args.wiring == "dial":
        fleet.start_indexer()
    log("starting Envoy with the filter (local-stack --indexer)")
    fleet.start_gateway()


def markdown(report, args):
    lines = [f"# kvroute with real vLLM 0.32 ({report['date']}; {args.engines} engines, wiring {args.wiring}, "
             f"hashing {report['hash_algo']}, PYTHONHASHSEED {report['PYTHONHASHSEED']}, "
             f"steady load {args.rate} requests/s)", ""]
    ls = report.get("local_stack", {})
    lines.append(f"- seed example: round2 followed round1: {ls.get('round2_followed_round1')}")
    for key in SCENARIOS:
        if key in report:
            lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in report[key].items()))
    return "\n".join(lines) + "\n"


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
    ap.add_argument("--scenarios", default="follow,kill,indexer", help=f"comma-separated, of {','.join(SCENARIOS)}")
    ap.add_argument("--prefixes", type=int, default=8)
    ap.add_argument("--num-blocks", type=int, default=1024,
                    help="blocks of 64 tokens each engine caches (run_server.sh's 160 evict within seconds "
                         "under the load's new conversations, blurring 'routed on lost blocks')")
    ap.add_argument("--rate", type=float, default=4.0, help="requests/s of the steady load")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of load before a kill (ghost: load seconds)")
    ap.add_argument("--down", type=float, default=10.0, help="seconds an engine stays dead")
    ap.add_argument("--late", type=float, default=75.0, help="seconds of load before the late engine starts")
    ap.add_argument("--after", type=float, default=20.0, help="seconds of load after the return")
    args = ap.parse_args()
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; known: {','.join(SCENARIOS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    # SIGTERM (and SIGINT, which a background shell leaves ignored) stop what was started.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(130))
    fleet = Fleet(args, args.out)
    report = {"date": time.strftime("%Y-%m-%d"), "engines": args.engines, "wiring": args.wiring,
              "hash_algo": args.hash_algo or "vLLM default (sha256)",
              "PYTHONHASHSEED": args.hash_seed or "unset", "rate_per_s": args.rate}
    detail = {}
    try:
        start_fleet(fleet, args)
        report["local_stack"] = json.loads((args.out / "local_stack_summary.json").read_text())
        for name in args.scenarios.split(","):
            log(f"scenario {name}")
            report[name], detail[name] = run_scenario(name, fleet, args)
            log(f"{name}: {json.dumps(report[name])}")
    finally:
        fleet.stop_all()
        (args.out / "results.json").write_text(json.dumps({"report": report, "detail": detail}, indent=1))
    text = markdown(report, args)
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
