#!/usr/bin/env bash
# The soak (not part of the test command): the release build of the native relay under a
# steady rate of distinct callbacks, with thinking notices and one WeCom fault a minute.
# Usage: scripts/soak.sh [minutes, default 10] [callbacks per second, default 50]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release -p wecom-relay -p wecom-relay-tests --bin wecom-relay --bin soak
WECOM_RELAY_BIN="$root/target/release/wecom-relay" exec "$root/target/release/soak" "${1:-10}" "${2:-50}"
