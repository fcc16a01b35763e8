#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time on its committed corpus; fails on any crash,
# panic, failed invariant or hang. See fuzz/README.md.
#
#   scripts/fuzz.sh               # every target, FUZZ_SECONDS (default 30) each
#   scripts/fuzz.sh key config    # only these targets
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, -Cpasses=sancov-module...); on the stable
# toolchain RUSTC_BOOTSTRAP=1 lets rustc accept them. New inputs found during the run go to a
# temporary directory, so the committed corpus is only read.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
# AddressSanitizer, cargo-fuzz's default: the daemon forbids `unsafe`, but its parsers' crates
# (toml, base64, http) do not. FUZZ_SANITIZER=none runs without it (a separate, full build).
sanitizer=${FUZZ_SANITIZER:-address}
# FUZZ_DEV=1 builds without optimisation: a cold build in minutes instead of half an hour (the
# release build compiles every dependency, the AWS SDK included, with one codegen unit), for a
# slower fuzzer. CI uses it for its bounded smoke run.
profile=()
if [ "${FUZZ_DEV:-0}" = 1 ]; then
  profile=(--dev)
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build "${profile[@]}" --sanitizer "$sanitizer"

scratch=$(mktemp -d /tmp/bcp-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s" >&2
  mkdir -p "$scratch/$target"
  # -timeout: one input running this long is a hang (the parsers take microseconds).
  # The first corpus dir receives new inputs; the committed one after it is only read.
  cargo fuzz run "${profile[@]}" --sanitizer "$sanitizer" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "fuzz: ${targets[*]}: no crash in ${seconds}s each" >&2
