"""Checks that a release binary's code is laid out by native/link-order.txt (native/build.rs):
most of the file's functions are in the binary, and the linker placed them in the file's
order. Fails with what to do when the file is stale or the linker ignored it.
Usage: python3 scripts/link-order-check.py BINARY ORDER_FILE"""

import re
import subprocess
import sys

binary, order_file = sys.argv[1], sys.argv[2]
order = [line.strip() for line in open(order_file)
         if line.strip() and not line.lstrip().startswith("#")]
address = {}
for line in subprocess.run(["nm", "-S", binary], capture_output=True, text=True,
                           check=True).stdout.splitlines():
    m = re.match(r"([0-9a-f]+) ([0-9a-f]+) [tTwW] (\S+)$", line)
    if m:
        address[m.group(3)] = (int(m.group(1), 16), int(m.group(2), 16))
placed = [address[name] for name in order if name in address]
print(f"{len(placed)} of {len(order)} functions of {order_file} in the binary, "
      f"{sum(size for _, size in placed) // 1024} KiB of code")
if len(placed) * 2 < len(order):
    sys.exit("most of the file's functions are not in the binary: the compiler or the "
             "dependencies changed since it was written; run bench/link-order.sh and commit it")
starts = [start for start, _ in placed]
if starts != sorted(starts):
    sys.exit("the functions are not in the file's order: the linker did not use the file "
             "(it is LLD's --symbol-ordering-file; see native/build.rs)")
