"""Writes native/link-order.txt: the functions a serving relay executes, hottest first, for
the linker to place together (native/build.rs). bench/link-order.sh builds what this needs
and calls it.

The relay runs under valgrind's callgrind, which records every function executed, through
the benchmark's workloads (new messages answered through the stand-in, WeCom's retries, a
flood refused at the queue's bound) and a look at /health and /metrics; each function's own
cost orders the file. Functions chosen at run time by CPU feature are added by name, as
valgrind's CPU may lack the feature (SHA-NI).
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
    ordered += sorted(m for m, d in symbols.items()
                      if m not in chosen and d.startswith(DISPATCHED))
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
