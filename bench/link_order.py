"""Writes native/link-order.txt: the functions a serving relay executes, hottest first, for
the linker to place together (native/build.rs). bench/link-order.sh builds what this needs
and calls it.

The relay runs under valgrind's callgrind, which records every function executed, through
the benchmark's workloads (new messages answered through the stand-in, WeCom's retries, a
flood refused at the queue's bound) and a look at /health and /metrics; each function's own
cost orders the file. Functions chosen at run time by CPU feature are added by name, as
valgrind's CPU may lack the feature (SHA-NI).

Callgrind's runs are slow and light, so what only a relay at full speed runs (a queue that
fills and refuses, a contended lock's slow path, a log line that waits) never shows there.
The benchmark's own workloads then run at full speed under `perf record`, sampling time and
recording the instruction of every page fault (the kernel maps 64 KB of code around each, so
these are exactly the functions that cost memory when left out); what they add comes last.
"""

from __future__ import annotations

import collections
import http.client
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import run

OUT = run.ROOT / "native" / "link-order.txt"
# Demangled-name prefixes of functions a CPU-feature dispatch picks, kept whatever valgrind ran.
DISPATCHED = ("sha1::compress::x86::", "aes::ni::", "base64_simd::multiversion::",
              "simdutf8::implementation::x86::avx2::", "memchr::arch::x86_64::avx2::")


# Demangled-name prefixes of slow paths that run when threads contend (a lock's, a waker's, a
# task handle's), and of `log` records forwarded to tracing: small, and run at full speed by
# chance, so that one sampled run may miss one. Kept whatever the runs saw.
CONTENDED = ("parking_lot::raw_rwlock::", "parking_lot::raw_mutex::", "parking_lot_core::",
             "tokio::runtime::task::raw::", "crossbeam_channel::waker::", "tracing_log::")


def workloads(tmp: Path) -> list[dict]:
    out = []
    for name, lines, users, slow_ms in [("new", 3000, 300, 0), ("dup", 200, 50, 0),
                                        ("flood", 3000, 300, 200)]:
        corpus = tmp / f"{name}.tsv"
        subprocess.run([str(run.TOOL), "corpus", "load", str(corpus), str(lines), str(users)],
                       check=True)
        out.append({"name": name, "corpus": corpus, "lines": lines, "users": users,
                    "slow_ms": slow_ms, "settle": 5})
    return out


def self_costs(paths: list[Path]) -> tuple[collections.Counter, set]:
    """Each function's own cost (instructions), by mangled name, over callgrind outputs."""
    cost: collections.Counter = collections.Counter()
    seen: set = set()
    for path in paths:
        names: dict = {}
        current, in_call = None, False
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
            if m:
                kind, ident, name = m.groups()
                if name:
                    names[ident] = name.strip()
                    seen.add(names[ident])
                if kind == "fn":
                    current, in_call = names.get(ident), False
                continue
            if line.startswith("calls="):
                in_call = True  # the next cost line is the call's inclusive cost
                continue
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit() and (line[0].isdigit() or line[0] in "+-*"):
                if in_call:
                    in_call = False
                elif current:
                    cost[current] += int(parts[1])
    return cost, seen


def sampled(tmp: Path, params: dict) -> collections.Counter:
    """Functions (mangled) the relay executed at full speed, by samples, under `perf record`."""
    wrapper = tmp / "relay-under-perf"
    # perf attaches to the relay, and the relay is stopped before perf is, so that no relay
    # outlives its run: it gets five seconds to drain (a flood's queue would take longer).
    wrapper.write_text(
        f"#!/bin/sh\n{run.RELAY} \"$@\" &\nrelay=$!\n"
        "perf record -q -e cpu-clock/freq=4000/u -e page-faults/period=1/u -p $relay "
        f"-o {tmp}/perf.$relay.data 2>>{tmp}/perf.log &\nperf=$!\n"
        "trap 'kill -TERM $relay; sleep 5; kill -KILL $relay 2>/dev/null; wait $relay; "
        "kill -INT $perf; wait $perf; exit 0' TERM\n"
        "wait $relay\n")
    wrapper.chmod(0o755)
    binary = run.RELAY
    run.RELAY = wrapper
    new, dup = tmp / "full-new.tsv", tmp / "full-dup.tsv"
    subprocess.run([str(run.TOOL), "corpus", "load", str(new), "300000", "20000"], check=True)
    subprocess.run([str(run.TOOL), "corpus", "load", str(dup), "2000", "500"], check=True)

    class Args:
        secs, connections, threads = 5, 32, 2
    for w in [{"corpus": dup, "lines": 2000, "users": 500, "settle": 1},
              {"corpus": new, "lines": 300000, "users": 20000, "settle": 3},
              {"corpus": new, "lines": 300000, "users": 20000, "slow_ms": 200, "settle": 1}]:
        r = run.load_run("relay", w, tmp, params, Args)
        print(f"full speed: {r['requests']} callbacks under perf", file=sys.stderr)
    run.RELAY = binary
    counts: collections.Counter = collections.Counter()
    for data in sorted(tmp.glob("perf.*.data")):
        out = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,sym,dso",
                              "--no-demangle"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*[0-9a-f]+ (\S+)(?:\+0x[0-9a-f]+)? \((.*)\)$", line)
            if m and Path(m.group(2)).name == binary.name:
                counts[m.group(1)] += 1
    return counts


def binary_symbols() -> dict:
    """Mangled to demangled names of the release binary's functions."""
    mangled = [l.split()[-1] for l in subprocess.run(
        ["nm", str(run.RELAY)], capture_output=True, text=True, check=True).stdout.splitlines()
        if len(l.split()) == 3 and l.split()[1] in "tTwW"]
    demangled = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True,
                               text=True, check=True).stdout.splitlines()
    return dict(zip(mangled, demangled))


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    params = json.loads(subprocess.run([str(run.TOOL), "params"], capture_output=True, text=True,
                                       check=True).stdout)
    wrapper = tmp / "relay-under-callgrind"
    wrapper.write_text(
        "#!/bin/sh\nexec valgrind --tool=callgrind --demangle=no --dump-instr=no "
        f"--callgrind-out-file={tmp}/callgrind.%p {run.RELAY} \"$@\" 2>>{tmp}/valgrind.log\n")
    wrapper.chmod(0o755)
    binary = run.RELAY
    run.RELAY = wrapper

    class Args:
        secs, connections, threads = 3, 8, 2

    for w in workloads(tmp):
        r = run.load_run("relay", w, tmp, params, Args)
        print(f"{w['name']}: {r['requests']} callbacks under callgrind", file=sys.stderr)
    standin = run.Standin(10)
    server = run.start("relay", tmp, params, standin)
    for path in ("/health", "/metrics"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", path)
        conn.getresponse().read()
    server.stop()
    standin.stop()
    run.RELAY = binary

    cost, seen = self_costs(sorted(tmp.glob("callgrind.*")))
    symbols = binary_symbols()
    ordered = [name for name, _ in cost.most_common() if name in symbols]
    ordered += sorted(n for n in seen if n in symbols and n not in cost)
    chosen = set(ordered)
    extra = [name for name, _ in sampled(tmp, params).most_common()
             if name in symbols and name not in chosen]
    print(f"full speed added {len(extra)} functions callgrind did not see", file=sys.stderr)
    ordered += extra
    chosen.update(extra)
    ordered += sorted(m for m, d in symbols.items()
                      if m not in chosen and d.startswith(DISPATCHED + CONTENDED))
    size = len(ordered)
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    OUT.write_text(
        "# The functions a serving relay executes, hottest first: native/build.rs has the linker\n"
        "# place them together. Written by bench/link-order.sh; names the build no longer has are\n"
        f"# skipped. {size} functions, {rustc}, x86_64-unknown-linux-gnu, Cargo.lock as committed.\n"
        + "\n".join(ordered) + "\n")
    print(f"{OUT.relative_to(run.ROOT)}: {size} functions", file=sys.stderr)


if __name__ == "__main__":
    main()
