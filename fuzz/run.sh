#!/usr/bin/env bash
# Build and run every fuzz target, one after another, and print a table:
# target, executions, exec/s, crashes, corpus size.
#
#   bash fuzz/run.sh [seconds-per-target] [target...]   (default 60 s, all targets)
#
# FUZZ_RUNS=N also stops each target after N executions (whichever comes
# first), e.g. `FUZZ_RUNS=10000000 bash fuzz/run.sh 1800`.
#
# FUZZ_DEV=1 builds without optimisations (`cargo fuzz build --dev`): a
# build several times faster, executions several times slower; what the
# smoke run in tests/run.sh uses.
#
# cargo-fuzz needs nightly-only compiler flags; there is only a stable
# toolchain here, so RUSTC_BOOTSTRAP=1 unlocks them on stable (for this build
# only). Installs cargo-fuzz 0.13.2 (`cargo install --locked`) if missing.
# Sanitizer: none. The gateway is `#![forbid(unsafe_code)]`; what the targets
# hunt are panics (indexing, overflow: cargo-fuzz builds with debug
# assertions) and broken properties, and without ASan both the build and
# every execution are several times faster.
#
# Corpora grow in fuzz/corpus/<target> (seeded from the small committed
# fuzz/seeds/<target>); crashes land in fuzz/artifacts/<target>; libFuzzer's
# own output in fuzz/logs/<target>.log. All three are git-ignored. Exit status
# 1 when any target crashed or did not run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
secs="${1:-60}"
shift || true
all=(headers raw_data open_data token)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz 0.13.2 (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
triple="$(rustc -vV | sed -n 's/^host: //p')"
# The fuzz workspace has its own target dir (fuzz/target, or
# $CARGO_TARGET_DIR/fuzz when that is set) so it never mixes with the
# gateway's uninstrumented build.
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-$here/target}"
profile=release
build_flags=(--sanitizer none --target-dir "$target_dir")
if [ "${FUZZ_DEV:-}" = 1 ]; then
  profile=debug
  build_flags+=(--dev)
fi
echo "fuzz/run.sh: building the targets ($profile, sanitizer none, debug assertions)"
cargo fuzz build "${build_flags[@]}"

mkdir -p logs
rows=()
failed=0
for t in "${targets[@]}"; do
  bin="$target_dir/$triple/$profile/$t"
  mkdir -p "corpus/$t" "artifacts/$t"
  rm -f "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/timeout-*
  echo "fuzz/run.sh: $t for ${secs} s"
  # open_data's inputs are a key, an iv and a ciphertext: 256 bytes reach
  # every check (14 blocks) and keep each execution (AES and JSON, twice)
  # cheap enough for millions of runs.
  max_len=1024
  [ "$t" = open_data ] && max_len=256
  status=0
  # One worker, one job: the machine's other core stays free. libFuzzer
  # writes its output to fuzz-0.log in the working directory: run it in logs/.
  (cd logs && rm -f fuzz-0.log && "$bin" "../corpus/$t" "../seeds/$t" \
    -max_total_time="$secs" -jobs=1 -workers=1 -print_final_stats=1 \
    ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="../artifacts/$t/" >/dev/null 2>&1) || status=$?
  mv -f logs/fuzz-0.log "logs/$t.log" 2>/dev/null || true
  log="logs/$t.log"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" 2>/dev/null | tail -n1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" 2>/dev/null | tail -n1)"
  crashes="$(find "artifacts/$t" -type f | wc -l)"
  corpus="$(find "corpus/$t" -type f | wc -l)"
  if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ] || [ -z "$execs" ]; then
    failed=1
    echo "fuzz/run.sh: $t FAILED (exit $status); the end of $log:"
    tail -n 40 "$log" 2>/dev/null || true
  fi
  rows+=("$(printf '| %-10s | %13s | %9s | %7s | %11s |' "$t" "${execs:-?}" "${rate:-?}" "$crashes" "$corpus")")
done

echo
echo "fuzz results, $(date -u '+%Y-%m-%d %H:%M UTC'), $profile build, ${secs} s per target${FUZZ_RUNS:+ (at most $FUZZ_RUNS executions)}, $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)"
echo
echo "| target     |    executions |    exec/s | crashes | corpus size |"
echo "|------------|--------------:|----------:|--------:|------------:|"
printf '%s\n' "${rows[@]}"
exit "$failed"
