#!/usr/bin/env bash
# Checks the packaging: the systemd unit (systemd-analyze verify with no complaint at all, and
# an exposure level of at most 2.0 from systemd-analyze security), and the container image:
# built with `docker build` where a container engine runs, otherwise the same static musl
# binary the image's first stage builds, checked to be static and to run. Prints the binary's
# size. Called by scripts/test.sh; installs musl-tools and the musl target if missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

bin="$root/target/debug/wecom-relay"
[[ -x "$bin" ]] || cargo build -p wecom-relay --locked
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "systemd unit: systemd-analyze verify and security"
command -v systemd-analyze >/dev/null || apt_install systemd
sed "s#/usr/local/bin/wecom-relay#$bin#" packaging/wecom-relay.service > "$tmp/wecom-relay.service"
complaints="$(systemd-analyze verify "$tmp/wecom-relay.service" 2>&1 || true)"
if [[ -n "$complaints" ]]; then
  echo "$complaints"
  echo "packaging/wecom-relay.service: systemd-analyze verify complained" >&2
  exit 1
fi
exposure="$(systemd-analyze security --offline=yes "$tmp/wecom-relay.service" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
echo "  exposure level ${exposure:-unknown} (0 is the most locked down, 10 the least)"
if [[ -z "$exposure" ]] || awk -v e="$exposure" 'BEGIN { exit !(e > 2.0) }'; then
  echo "packaging/wecom-relay.service: exposure ${exposure:-unknown} is above 2.0" >&2
  exit 1
fi

if docker info >/dev/null 2>&1; then
  echo "image: docker build"
  docker build -q -t wecom-relay:check "$root"
  docker run --rm wecom-relay:check --version
  docker image inspect wecom-relay:check --format '  image size {{.Size}} bytes'
  exit 0
fi

echo "image: no container engine here; building the image's static musl binary instead"
command -v musl-gcc >/dev/null || apt_install musl-tools
rustup target list --installed | grep -q '^x86_64-unknown-linux-musl$' || rustup target add x86_64-unknown-linux-musl
cargo build --release --locked -p wecom-relay --target x86_64-unknown-linux-musl
static="$root/target/x86_64-unknown-linux-musl/release/wecom-relay"
if ldd "$static" 2>&1 | grep -q '=>'; then
  ldd "$static"
  echo "the musl build is not static" >&2
  exit 1
fi
"$static" --version
"$static" check-config --config config.example.yaml >/dev/null
echo "  static binary $(stat -c %s "$static") bytes"
