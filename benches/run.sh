#!/usr/bin/env bash
# The benchmark on a fresh Debian machine: installs what is missing (wrk and
# redis-server from apt; cmake and the Rust MongoDB-wire server
# `secantusd-rs` from crates.io, about 8 minutes the first time), then runs
# `cargo bench --bench gateway`, which builds the gateway in release mode and
# starts everything it measures on free loopback ports.
#
# BENCH_NO_RUST_MONGO=1 skips building secantusd-rs; the bench then uses the
# Python SecantusDB (installed by tests/run.sh) and says so in its output.
# Other knobs (BENCH_QUICK=1, BENCH_ONLY=…, …): README, "Benchmarks".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

pkgs=()
have wrk || pkgs+=(wrk)
have redis-server || pkgs+=(redis-server)
if [ -z "${BENCH_NO_RUST_MONGO:-}" ] && ! have secantusd-rs && [ ! -x "$HOME/.cargo/bin/secantusd-rs" ]; then
  have cmake || pkgs+=(cmake)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "benches/run.sh: installing ${pkgs[*]} from apt"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  $SUDO service redis-server stop >/dev/null 2>&1 || true
fi
export PATH="$PATH:/usr/sbin"

if [ -z "${BENCH_NO_RUST_MONGO:-}" ] && ! have secantusd-rs && [ ! -x "$HOME/.cargo/bin/secantusd-rs" ]; then
  echo "benches/run.sh: building secantusd-rs (crate secantus-mdb; GPL-2.0, run as a separate process)"
  cargo install secantus-mdb --version 0.5.3-beta.196 --locked --ignore-rust-version
fi

exec cargo bench --locked --bench gateway
