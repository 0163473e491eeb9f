#!/usr/bin/env bash
# Faults under load on a fresh Debian machine: installs redis-server from apt
# if it is missing, then runs `cargo bench --bench faults`, which builds the
# gateway in release mode, starts redis-server and the gateway on free
# loopback ports, and prints one row per fault (README, "Faults under load").
# Knobs: FAULTS_USERS (300), FAULTS_CONCURRENCY (64), FAULTS_LOGIN_EVERY (10).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

if ! have redis-server; then
  echo "benches/faults.sh: installing redis-server from apt"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  $SUDO service redis-server stop >/dev/null 2>&1 || true
fi
export PATH="$PATH:/usr/sbin"

exec cargo bench --locked --bench faults
