#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine. Installs what is missing
# (redis-server, nginx, systemd from apt; SecantusDB from PyPI into its own
# venv), starts one redis-server and one MongoDB-wire server on free loopback
# ports for the run, runs every test, and stops them again on exit.
#
# Already have the services? Set REDIS_URL / MONGODB_URI and they are used
# instead (tests give every test its own key prefix / database).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# --- Debian packages -------------------------------------------------------
pkgs=()
have redis-server || pkgs+=(redis-server)
have nginx || pkgs+=(nginx)
have systemd-analyze || pkgs+=(systemd)
have python3 || pkgs+=(python3)
# SecantusDB goes into its own venv; Debian's python3 needs python3-venv for it.
if [ -z "${MONGODB_URI:-}" ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  pkgs+=(python3-venv)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${pkgs[*]} from apt"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  # Debian starts packaged services; the tests start their own on free ports.
  for svc in redis-server nginx; do $SUDO service "$svc" stop >/dev/null 2>&1 || true; done
fi
export PATH="$PATH:/usr/sbin"
# Everything the suite needs is installed now, so a test that finds a tool
# missing must fail instead of skipping (tests read this, and CI).
export WEAPP_TEST_STRICT=1

scratch="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- redis-server ----------------------------------------------------------
if [ -z "${REDIS_URL:-}" ]; then
  port="$(free_port)"
  mkdir -p "$scratch/redis"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$scratch/redis" --loglevel warning >"$scratch/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  redis-cli -p "$port" ping >/dev/null || { cat "$scratch/redis.log"; exit 1; }
  export REDIS_URL="redis://127.0.0.1:$port/"
  echo "tests/run.sh: redis-server on $REDIS_URL"
fi

# --- MongoDB-wire server (SecantusDB, see ../shared/MONGO.md) ---------------
export SECANTUS_VENV="${SECANTUS_VENV:-$HOME/.cache/secantusdb-0.7.0b3}"
if [ -z "${MONGODB_URI:-}" ]; then
  if ! "$SECANTUS_VENV/bin/python" -c 'import secantus' >/dev/null 2>&1; then
    echo "tests/run.sh: installing secantusdb==0.7.0b3 into $SECANTUS_VENV"
    python3 -m venv "$SECANTUS_VENV"
    "$SECANTUS_VENV/bin/pip" install -q secantusdb==0.7.0b3
  fi
  mkdir -p "$scratch/mongo"
  : >"$scratch/empty.toml"
  "$SECANTUS_VENV/bin/python" -m secantus --config "$scratch/empty.toml" --host 127.0.0.1 \
    --port 0 --storage-path "$scratch/mongo" --cache-size 256M >"$scratch/mongo.log" 2>&1 &
  pids+=($!)
  mport=""
  for _ in $(seq 1 200); do
    mport="$(grep -o 'listening on 127.0.0.1:[0-9]*' "$scratch/mongo.log" | head -n1 | cut -d: -f2 || true)"
    [ -n "$mport" ] && break
    sleep 0.05
  done
  [ -n "$mport" ] || { echo "SecantusDB did not start:"; cat "$scratch/mongo.log"; exit 1; }
  export MONGODB_URI="mongodb://127.0.0.1:$mport/?directConnection=true"
  echo "tests/run.sh: SecantusDB on $MONGODB_URI"
fi

# --- the suite -------------------------------------------------------------
# Tests mostly wait on sockets and timers, so run more of them than cores.
# The gateway's integration tests are a few binaries, one link each
# (tests/{session,wechat,business,server}/main.rs, plus tests/examples.rs);
# the tests of one binary share one Redis Cluster (and one redis-server and
# SecantusDB of their own when REDIS_URL / MONGODB_URI are not set).
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-6}"
cargo test --locked --workspace --all-targets
cargo test --locked --workspace --doc
# The libraries' docs build without a warning (broken links, missing docs).
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps -p weapp-session -p weapp-wechat --all-features
# The two libraries package and build on their own, as crates.io would get
# them (weapp-wechat is verified against the just-packaged weapp-session).
cargo package --locked -p weapp-session -p weapp-wechat

# --- fuzz smoke run --------------------------------------------------------
# Every fuzz target (fuzz/, its own workspace) for a short run: they build
# and nothing crashes in the first seconds. The long runs are
# `bash fuzz/run.sh [seconds-per-target]` (README, "Fuzzing").
if [ "${WEAPP_SKIP_FUZZ:-}" = 1 ]; then
  echo "tests/run.sh: WEAPP_SKIP_FUZZ=1: the fuzz smoke run is SKIPPED"
else
  FUZZ_DEV=1 bash fuzz/run.sh "${WEAPP_FUZZ_SECONDS:-20}"
fi
echo "tests/run.sh: all tests passed"
