"""Runs every benchmark side by side and prints one table: each figure next to its peer's,
measured in the same run, as a ratio. bench/run.sh installs what this needs and calls it.

1. Core per message: wecom-relay's core against wechatpy and the raw AES + SHA1 floor.
2. Native server under load (wrk): wecom-relay against the Hermes adapter and against nginx
   answering a constant 200, on duplicates, on new messages, and on a flood against a slow API.
   On duplicates also the relay's own HTTP stack answering a constant 200 ("stack"), which
   tells the relay's own work apart from its stack's.
3. Worker: the wasm's size, and the core's CPU per callback compiled to wasm under node.
4. Cold start: the native process to its first answered callback; the Worker under wrangler
   dev (workerd) to its first.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
RELAY = TARGET / "release" / "wecom-relay"
TOOL = TARGET / "release" / "wecom-relay-bench"
TICKS = os.sysconf("SC_CLK_TCK")
# `--pin`: the CPUs of the load side (wrk, and the stand-in that plays WeCom) and of the server
# under test, as taskset lists. None: every process runs anywhere (the default).
PIN: tuple[str, str] | None = None


def pinned(argv: list[str], side: str) -> list[str]:
    """`argv` under taskset on `side`'s CPUs ("load" or "server") when `--pin` asks."""
    if PIN is None:
        return argv
    return ["taskset", "-c", PIN[0] if side == "load" else PIN[1], *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    sys.exit(f"{what} did not listen on {port} within {timeout} s")


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total


def peak_rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class Standin:
    """The stand-in for WeCom's API, in its own process."""

    def __init__(self, users: int, slow_ms: int = 0):
        self.port = free_port()
        self.proc = subprocess.Popen(
            pinned([str(TOOL), "standin", str(self.port), str(users), str(slow_ms)], "load"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready"):
            sys.exit(f"the stand-in did not start: {ready!r}")
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class Server:
    """One server under test: started, measured, stopped."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict | None = None,
                 cwd: Path | None = None, ready_line: bool = False):
        self.name, self.port = name, port
        self.log = open(Path(tempfile.gettempdir()) / f"bench-{name}.log", "w")
        self.proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, cwd=cwd,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(port, self.proc, name)

    def pids(self) -> list[int]:
        # nginx: the master and its workers; the others are one process.
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def relay_config(dirpath: Path, port: int, params: dict, api_base: str) -> Path:
    cfg = {
        "platforms": {"wecom_callback": {"enabled": True, "extra": {
            **params, "host": "127.0.0.1", "port": port, "path": "/wecom/callback",
            "api_base": api_base, "allow_all_users": True,
        }}},
        "agent": {"kind": "echo", "thinking_notice_secs": 0},
    }
    path = dirpath / f"relay-{port}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def start(kind: str, tmp: Path, params: dict, standin: Standin | None) -> Server:
    port = free_port()
    if kind == "nginx":
        conf = (BENCH / "nginx.conf.in").read_text().replace("@DIR@", str(tmp)).replace("@PORT@", str(port))
        (tmp / "nginx.conf").write_text(conf)
        return Server("nginx", pinned(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], "server"), port)
    if kind == "stack":
        return Server("stack", pinned([str(TOOL), "stack", str(port)], "server"), port)
    if kind == "relay":
        cfg = relay_config(tmp, port, params, standin.url)
        return Server("relay", pinned([str(RELAY), "serve", "--config", str(cfg)], "server"), port,
                      env={"RUST_LOG": os.environ.get("BENCH_RELAY_LOG", "info")})
    if kind == "hermes":
        return Server("hermes", pinned([os.environ.get("BENCH_PYTHON", sys.executable),
                                        str(BENCH / "hermes_adapter.py"), str(port), standin.url,
                                        json.dumps(params)], "server"), port)
    raise ValueError(kind)


def wrk(port: int, corpus: Path, secs: int, connections: int, threads: int) -> dict:
    """One wrk run; with `wrk_cpu_us_per_req`, wrk's own CPU over the timed requests."""
    marker = Path(f"{corpus}.ready")  # made by callbacks.lua once every thread has loaded
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        pinned(["wrk", f"-t{threads}", f"-c{connections}", f"-d{secs}s", "--latency", "--timeout", "5s",
                "-s", str(BENCH / "wrk" / "callbacks.lua"), f"http://127.0.0.1:{port}/"], "load"),
        env={**os.environ, "BENCH_CORPUS": str(corpus), "BENCH_THREADS": str(threads)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # wrk's clock starts when the last thread has loaded the corpus: what it spends from
    # then on is its cost of the timed requests, without the loading.
    loaded = None
    while loaded is None and proc.poll() is None:
        if marker.exists():
            loaded = cpu_ticks([proc.pid]) / TICKS
        else:
            time.sleep(0.002)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(l for l in out.splitlines() if l.startswith("BENCH "))
    r = json.loads(line[len("BENCH "):])
    if loaded is not None:
        spent = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        r["wrk_cpu_us_per_req"] = (spent - loaded) * 1e6 / max(r["requests"], 1)
    return r


def load_run(kind: str, workload: dict, tmp: Path, params: dict, args) -> dict:
    needs_api = kind in ("relay", "hermes")
    standin = Standin(workload["users"], workload.get("slow_ms", 0)) if needs_api else None
    server = start(kind, tmp, params, standin)
    try:
        pids = server.pids()
        before = cpu_ticks(pids)
        api_before = cpu_ticks([standin.proc.pid]) if standin else 0
        r = wrk(server.port, workload["corpus"], args.secs, args.connections, args.threads)
        pids = server.pids()
        r["cpu_us_per_req"] = (cpu_ticks(pids) - before) / TICKS * 1e6 / max(r["requests"], 1)
        if needs_api:
            # Let accepted work finish (the API is local), then read the peak.
            time.sleep(workload.get("settle", 2))
            r["sent"] = standin.stats()["send_calls"]
            if r["sent"]:
                r["api_cpu_us_per_send"] = ((cpu_ticks([standin.proc.pid]) - api_before) / TICKS
                                            * 1e6 / r["sent"])
        r["peak_rss_mib"] = peak_rss_kib(pids) / 1024
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
        r["wrapped"] = max(0, r["requests"] - workload["lines"])
    finally:
        server.stop()
        if standin:
            standin.stop()
    return r


def spread(values: list[float], fmt: str) -> str:
    """` (rounds: low to high)`, the range of a per-round ratio, when there are rounds."""
    if len(values) < 2:
        return ""
    return f" (rounds: {fmt.format(min(values))} to {fmt.format(max(values))})"


def accepted_rps(r: dict) -> float:
    """Callbacks answered 200 a second (wrk's `status` counts the answers of 400 and over)."""
    return (r["requests"] - r["status"]) / (r["duration_us"] / 1e6)


def median_run(runs: list[dict]) -> dict:
    runs = sorted(runs, key=lambda r: r["rps"])
    return runs[len(runs) // 2]


def fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def core_section(tmp: Path, params: dict, args, rows: list) -> dict:
    corpus = tmp / "core.jsonl"
    subprocess.run([str(TOOL), "corpus", "core", str(corpus), "1000"], check=True)
    figures = {"core": [], "floor": [], "wechatpy": []}
    for _ in range(args.rounds):  # interleaved
        r = json.loads(subprocess.run([str(TOOL), "core", str(corpus), str(args.core_secs)],
                                      capture_output=True, text=True, check=True).stdout)
        figures["core"].append(r["core_ns"])
        figures["floor"].append(r["floor_ns"])
        w = json.loads(subprocess.run(
            [os.environ.get("BENCH_PYTHON", sys.executable), str(BENCH / "wechatpy_core.py"),
             json.dumps(params), str(corpus), str(args.core_secs)],
            capture_output=True, text=True, check=True).stdout)
        figures["wechatpy"].append(w["wechatpy_ns"])
    core, floor, wechatpy = (statistics.median(figures[k]) for k in ("core", "floor", "wechatpy"))
    # Each round's ratio is of figures measured moments apart; their spread says how far the
    # machine's noise moves a ratio within this run.
    slower = [w / c for w, c in zip(figures["wechatpy"], figures["core"])]
    above = [c / f for c, f in zip(figures["core"], figures["floor"])]
    rows.append(("Core per callback (1,000 callbacks, 5 to 600 bytes of text, pictures, voice, events)", "", "", ""))
    rows.append(("  wecom-relay core: verify, decrypt, route, parse", f"{core / 1000:.2f} µs", "1.0", ""))
    rows.append(("  wechatpy: decrypt_message + parse_message", f"{wechatpy / 1000:.1f} µs",
                 f"{wechatpy / core:.1f}× slower{spread(slower, '{:.1f}×')}", "target 25×"))
    rows.append(("  floor: one SHA1 + one AES-256-CBC decryption", f"{floor / 1000:.2f} µs",
                 # Two decimals: the target's edge is 2.0, which one decimal rounds onto.
                 f"core is {core / floor:.2f}× the floor{spread(above, '{:.2f}×')}", "target ≤ 2×"))
    return {"core_ns": core, "floor_ns": floor, "wechatpy_ns": wechatpy, "corpus": corpus}


def load_section(tmp: Path, params: dict, args, rows: list) -> None:
    dup = tmp / "dup.tsv"
    new = tmp / "new.tsv"
    subprocess.run([str(TOOL), "corpus", "load", str(dup), "2000", "500"], check=True)
    subprocess.run([str(TOOL), "corpus", "load", str(new), str(args.new_messages), "20000"], check=True)
    workloads = [
        {"name": "2,000 callbacks cycled (after the first round, WeCom retries: dedup)",
         "corpus": dup, "lines": 2000, "users": 500, "settle": 1,
         "peers": ["nginx", "stack", "relay", "hermes"]},
        {"name": f"every callback new ({args.new_messages:,} from 20,000 members), each answered through message/send",
         "corpus": new, "lines": args.new_messages, "users": 20000, "settle": 3},
        {"name": "flood: every callback new, message/send takes 200 ms (the relay's queue bounds)",
         "corpus": new, "lines": args.new_messages, "users": 20000, "slow_ms": 200, "settle": 1,
         "peers": ["relay"]},
    ]
    for w in workloads:
        kinds = w.get("peers", ["nginx", "relay", "hermes"])
        runs = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for kind in kinds:  # interleaved, so drift in the machine's load hits all alike
                runs[kind].append(load_run(kind, w, tmp, params, args))
        rows.append((w["name"], "", "", ""))
        best = {k: median_run(v) for k, v in runs.items()}
        ceiling = best.get("nginx", {}).get("rps")
        for kind in kinds:
            r = best[kind]
            label = {"nginx": "nginx, constant 200 (ceiling)",
                     "stack": "the relay's HTTP stack, constant 200 (hyper, tokio)",
                     "relay": "wecom-relay native",
                     "hermes": "Hermes wecom_callback 0.19.0"}[kind]
            detail = (f"{r['rps']:,.0f} req/s, p50 {fmt_us(r['p50_us'])}, p99 {fmt_us(r['p99_us'])}, "
                      f"p99.9 {fmt_us(r['p999_us'])}, {r['cpu_us_per_req']:.0f} µs CPU/req, "
                      f"peak RSS {r['peak_rss_mib']:.1f} MiB, errors {r['errors']}")
            if r["status"]:
                # Refusals (the relay's 503 once its queue is full) are answers too, and cheap
                # ones: the rate of callbacks taken on is the one that counts for new messages.
                detail += f", {r['status']:,} refused ({accepted_rps(r):,.0f} req/s taken on)"
            if "sent" in r:
                detail += f", answers sent {r['sent']:,}"
            if "api_cpu_us_per_send" in r:
                detail += f" (the stand-in: {r['api_cpu_us_per_send']:.0f} µs CPU a send)"
            if "wrk_cpu_us_per_req" in r:
                detail += f"; wrk: {r['wrk_cpu_us_per_req']:.0f} µs CPU/req"
            if r["wrapped"]:
                detail += f", {r['wrapped']:,} past the corpus (duplicates)"
            ratio = ""
            if kind == "relay" and ceiling:
                shares = [a["rps"] / b["rps"] for a, b in zip(runs["relay"], runs["nginx"])]
                ratio = f"{r['rps'] / ceiling:.0%} of nginx{spread(shares, '{:.0%}')}"
                if r["status"]:
                    ratio += f"; taken on: {accepted_rps(r) / ceiling:.0%}"
            if kind == "stack" and ceiling:
                shares = [a["rps"] / b["rps"] for a, b in zip(runs["stack"], runs["nginx"])]
                ratio = f"{r['rps'] / ceiling:.0%} of nginx{spread(shares, '{:.0%}')}"
            if kind == "relay" and "stack" in best:
                shares = [a["rps"] / b["rps"] for a, b in zip(runs["relay"], runs["stack"])]
                ratio += f", {r['rps'] / best['stack']['rps']:.0%} of the stack{spread(shares, '{:.0%}')}"
            if kind == "relay" and "hermes" in best:
                ratio += f", {r['rps'] / best['hermes']['rps']:.1f}× Hermes"
            rows.append((f"  {label}", detail, ratio, ""))


def worker_section(tmp: Path, core: dict, args, rows: list) -> None:
    wasm = next(iter(sorted((ROOT / "worker" / "build").rglob("*.wasm"))), None)
    rows.append(("Worker", "", "", ""))
    if wasm is None:
        rows.append(("  wasm", "not built (scripts/worker-build.sh)", "", ""))
    else:
        raw = wasm.read_bytes()
        gz = len(gzip.compress(raw, 9))
        rows.append((f"  {wasm.relative_to(ROOT)}", f"{len(raw):,} bytes, {gz:,} gzipped", "",
                     "target < 200 KB gzip"))
    wasi = TARGET / "wasm32-wasip1" / "worker" / "wecom-relay-bench.wasm"
    if wasi.exists():
        figures = []
        for _ in range(args.rounds):
            out = subprocess.run(["node", "--no-warnings", str(BENCH / "wasi_core.mjs"), str(wasi),
                                  str(core["corpus"]), str(args.core_secs)],
                                 capture_output=True, text=True, check=True).stdout
            figures.append(json.loads(out)["core_ns"])
        ns = statistics.median(figures)
        rows.append(("  core per callback compiled to wasm (the Worker's profile), under node",
                     f"{ns / 1000:.2f} µs", f"{ns / core['core_ns']:.1f}× native", "target < 100 µs"))
    shim = ROOT / "worker" / "build" / "worker" / "shim.mjs"
    wrangler = ROOT / "node_modules" / ".bin" / "wrangler"
    if shim.exists() and wrangler.exists():
        worker_under_workerd(tmp, args, rows)


def worker_under_workerd(tmp: Path, args, rows: list) -> None:
    """The Worker under `wrangler dev` (workerd, local KV, Durable Objects): from the start of
    wrangler to the first answered callback (workerd starting, the wasm compiled and
    instantiated), and wrk on duplicates. (node 20 cannot compile the Worker's wasm: it uses
    the exnref exception-handling proposal, which workerd supports.)"""
    params = json.loads(subprocess.run([str(TOOL), "params"], capture_output=True, text=True,
                                       check=True).stdout)
    standin = Standin(500)
    wdir = tmp / "worker"
    wdir.mkdir(exist_ok=True)
    (wdir / ".dev.vars").write_text(
        f"WECOM_CALLBACK_CORP_SECRET='{params['corp_secret']}'\n"
        f"WECOM_CALLBACK_TOKEN='{params['token']}'\n"
        f"WECOM_CALLBACK_ENCODING_AES_KEY='{params['encoding_aes_key']}'\n")
    config = {
        "name": "wecom-relay-bench", "main": str(ROOT / "worker" / "build" / "worker" / "shim.mjs"),
        "compatibility_date": "2026-04-01",
        "kv_namespaces": [{"binding": "WECOM_RELAY_KV", "id": "wecom-relay-bench-kv"}],
        "vars": {"WECOM_CALLBACK_CORP_ID": params["corp_id"], "WECOM_CALLBACK_AGENT_ID": str(params["agent_id"]),
                 "WECOM_CALLBACK_API_BASE": standin.url, "WECOM_CALLBACK_ALLOW_ALL_USERS": "true",
                 "AGENT_KIND": "echo", "AGENT_THINKING_NOTICE_SECS": "0"},
        "durable_objects": {"bindings": [
            {"name": "WECOM_RELAY_USERS", "class_name": "UserJobs"},
            {"name": "WECOM_RELAY_TOKENS", "class_name": "AppTokens"},
            {"name": "WECOM_RELAY_STREAMS", "class_name": "BotStreams"}]},
        "migrations": [{"tag": "v1", "new_sqlite_classes": ["UserJobs", "AppTokens", "BotStreams"]}],
    }
    (wdir / "wrangler.json").write_text(json.dumps(config))
    query, body = signed_callback(tmp)
    dup = tmp / "dup.tsv"
    if not dup.exists():
        subprocess.run([str(TOOL), "corpus", "load", str(dup), "2000", "500"], check=True)
    port = free_port()
    log = open(tmp / "wrangler.log", "w")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(ROOT / "node_modules" / ".bin" / "wrangler"), "dev", "--config", str(wdir / "wrangler.json"),
         "--ip", "127.0.0.1", "--port", str(port), "--inspector-port", str(free_port()),
         "--persist-to", str(wdir / "state"), "--show-interactive-dev-session=false", "--log-level", "warn"],
        cwd=wdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "CI": "true", "WRANGLER_SEND_METRICS": "false", "NO_COLOR": "1",
             "CLOUDFLARE_CF_FETCH_ENABLED": "false"})
    try:
        while True:
            status = post_status(port, query, body, 10)
            if status == 200:
                break
            if status is not None:
                sys.exit(f"the Worker answered {status} to the cold-start callback (see {tmp / 'wrangler.log'})")
            if proc.poll() is not None or time.perf_counter() - started > 120:
                sys.exit("wrangler dev did not answer within 120 s")
            time.sleep(0.005)
        cold = (time.perf_counter() - started) * 1000
        r = wrk(port, dup, args.secs, args.connections, args.threads)
        rps = r["requests"] / (r["duration_us"] / 1e6)
        errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        standin.stop()
    rows.append(("  wrangler dev (workerd): start to the first answered callback", f"{cold:,.0f} ms",
                 "", "wasm compile + instantiate included"))
    rows.append(("  wrangler dev (workerd), 2,000 callbacks cycled",
                 f"{rps:,.0f} req/s, p99 {fmt_us(r['p99_us'])}, errors {errors}", "", ""))


def post_status(port: int, query: str, body: bytes, timeout: float) -> int | None:
    """POSTs one callback; its status, or None while nothing listens yet."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("POST", query, body, {"Content-Type": "text/xml"})
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def signed_callback(tmp: Path) -> tuple[str, bytes]:
    path = tmp / "one.tsv"
    subprocess.run([str(TOOL), "corpus", "load", str(path), "1", "1"], check=True)
    query, body = path.read_text().rstrip("\n").split("\t", 1)
    return query, body.encode()


def cold_start(tmp: Path, params: dict, args, rows: list) -> None:
    query, body = signed_callback(tmp)
    standin = Standin(1)
    figures = []
    try:
        for _ in range(max(args.rounds, 5)):
            port = free_port()
            cfg = relay_config(tmp, port, params, standin.url)
            started = time.perf_counter()
            proc = subprocess.Popen([str(RELAY), "serve", "--config", str(cfg)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while post_status(port, query, body, 1) != 200:
                if proc.poll() is not None:
                    sys.exit("the relay exited during the cold start")
                time.sleep(0.0005)
            figures.append((time.perf_counter() - started) * 1000)
            proc.terminate()
            proc.wait()
    finally:
        standin.stop()
    rows.append(("Cold start", "", "", ""))
    rows.append(("  native: process start to the first answered callback (200)",
                 f"{statistics.median(figures):.1f} ms (median of {len(figures)})", "", "target < 20 ms"))


def main() -> None:
    global PIN
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--secs", type=int, default=5, help="seconds of wrk per run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is shown")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--core-secs", type=int, default=3)
    p.add_argument("--new-messages", type=int, default=300_000)
    p.add_argument("--only", choices=["core", "load", "worker", "cold"], action="append")
    p.add_argument("--pin", action="store_true",
                   help="load runs: wrk and the stand-in on CPU 0, the server under test on the "
                        "other CPUs (taskset), so they do not take turns on the same cores")
    args = p.parse_args()
    if args.pin:
        cpus = os.cpu_count() or 1
        if cpus < 2 or shutil.which("taskset") is None:
            sys.exit("--pin needs at least two CPUs and taskset (util-linux)")
        PIN = ("0", f"1-{cpus - 1}")
    only = set(args.only or ["core", "load", "worker", "cold"])
    params = json.loads(subprocess.run([str(TOOL), "params"], capture_output=True, text=True,
                                       check=True).stdout)
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="wecom-relay-bench-") as d:
        tmp = Path(d)
        core = core_section(tmp, params, args, rows) if only & {"core", "worker"} else {}
        if "load" in only:
            load_section(tmp, params, args, rows)
        if "worker" in only:
            worker_section(tmp, core, args, rows)
        if "cold" in only:
            cold_start(tmp, params, args, rows)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    where = f", wrk and the stand-in on CPU {PIN[0]}, servers on CPUs {PIN[1]}" if PIN else ""
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), "
          f"wrk -t{args.threads} -c{args.connections} -d{args.secs}s{where}, median of {args.rounds} interleaved rounds\n")
    print("| case | figure | ratio | target |\n|---|---|---|---|")
    for case, figure, ratio, target in rows:
        print(f"| {case} | {figure} | {ratio} | {target} |")


if __name__ == "__main__":
    main()
