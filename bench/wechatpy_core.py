"""Per-callback cost of wechatpy (PyPI) on the bench corpus: verify the signature, decrypt,
and parse the message, as `WeChatCrypto.decrypt_message` and `parse_message` do for a WeCom
app. Prints JSON: {"wechatpy_ns": nanoseconds per callback}. Usage: wechatpy_core.py PARAMS CORPUS SECS
"""

import json
import sys
import time

from wechatpy.enterprise import parse_message
from wechatpy.enterprise.crypto import WeChatCrypto


def main() -> None:
    params = json.loads(sys.argv[1])
    cases = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8")]
    secs = float(sys.argv[3])
    crypto = WeChatCrypto(params["token"], params["encoding_aes_key"], params["corp_id"])

    def once(case):
        xml = crypto.decrypt_message(case["body"], case["msg_signature"], case["timestamp"], case["nonce"])
        return parse_message(xml)

    for case in cases:  # every case must open, as in the Rust measurement
        once(case)
    rounds, figures = 7, []
    for _ in range(rounds):
        done, started = 0, time.perf_counter_ns()
        while time.perf_counter_ns() - started < secs * 1e9 / rounds:
            for case in cases:
                once(case)
            done += len(cases)
        figures.append((time.perf_counter_ns() - started) / done)
    figures.sort()
    print(json.dumps({"wechatpy_ns": figures[len(figures) // 2]}))


if __name__ == "__main__":
    main()
