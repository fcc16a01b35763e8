#!/usr/bin/env bash
# Instructions per request: a measure that does not swing with the machine's load (timings on
# the shared 2-core machines move by ±30 %), counted by valgrind's callgrind (these VMs expose no
# hardware counters to `perf stat`).
#
#   benches/instructions.sh [requests]
#
# Runs the release daemon under callgrind twice, local tiers only, access log on (to a file, as
# in production behind a log collector), and makes `requests` Gradle GETs of a 32 KiB memory hit
# over one keep-alive connection in the first run and 2 × `requests` in the second. Start-up,
# the PUT and shutdown cost the same in both runs, so
#
#   instructions per request = (Ir(run 2) - Ir(run 1)) / requests
#
# counts only what the extra requests cost the daemon (every thread). The same for a 4 MiB disk
# hit (per MiB served). Needs valgrind and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}
command -v valgrind >/dev/null || { echo "instructions.sh needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/build-cache-proxy
work=$(mktemp -d /tmp/bcp-instructions.XXXXXX)
trap 'rm -rf "$work"' EXIT

# One daemon run under callgrind: PUT the body, GET it `count` times, stop; prints total Ir.
measure() { # size count memory_max
  local size=$1 count=$2 memory=$3 run=$work/run-$1-$2
  mkdir -p "$run"
  cat > "$run/daemon.toml" <<CONF
[listen]
gradle = "127.0.0.1:0"
admin = ""
[memory]
max_size = "$memory"
[disk]
dir = "$run/data"
max_size = "1GiB"
min_free = "0B"
[log]
level = "info"
CONF
  valgrind --tool=callgrind --callgrind-out-file="$run/callgrind.out" --trace-children=no \
    "$bin" serve --config "$run/daemon.toml" > "$run/daemon.out" 2> "$run/daemon.log" &
  local pid=$!
  for _ in $(seq 1 600); do grep -q ready "$run/daemon.out" 2>/dev/null && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/.*gradle=\([^ ]*\).*/\1/p' "$run/daemon.out")
  [ -n "$addr" ] || { echo "the daemon did not start:" >&2; cat "$run/daemon.log" >&2; exit 1; }
  python3 - "$addr" "$size" "$count" <<'PY'
import http.client, sys
addr, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host, port = addr.rsplit(":", 1)
key = "%032x" % size
body = bytes((i * 31) & 0xFF for i in range(size))
conn = http.client.HTTPConnection(host, int(port), timeout=600)
conn.request("PUT", f"/cache/{key}", body=body)
assert conn.getresponse().read() is not None
for _ in range(count):
    conn.request("GET", f"/cache/{key}")
    response = conn.getresponse()
    got = response.read()
    assert response.status == 200 and len(got) == size, (response.status, len(got))
PY
  kill -TERM "$pid"
  wait "$pid" || true
  # The "summary:" / "totals:" line of callgrind's output holds the total instruction count.
  awk '/^(summary|totals):/ {print $2; exit}' "$run/callgrind.out"
}

per_request() { # label size memory_max unit_bytes
  local label=$1 size=$2 memory=$3 unit=$4
  local one two
  one=$(measure "$size" "$requests" "$memory")
  two=$(measure "$size" $((requests * 2)) "$memory")
  awk -v label="$label" -v a="$one" -v b="$two" -v n="$requests" -v size="$size" -v unit="$unit" 'BEGIN {
    per = (b - a) / n
    if (unit > 0) printf "%-40s %14.0f instructions per request, %.0f per MiB\n", label, per, per * 1048576 / size
    else printf "%-40s %14.0f instructions per request\n", label, per }'
}

per_request "32 KiB Gradle hit, memory tier" 32768 "64MiB" 0
per_request "4 MiB Gradle hit, disk tier" 4194304 "0B" 1
