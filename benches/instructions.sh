#!/usr/bin/env bash
# Instructions per request: a measure that does not swing with the machine's load (timings on
# the shared 2-core machines move by ±30 %), counted by valgrind's callgrind (these VMs expose no
# hardware counters to `perf stat`).
#
#   benches/instructions.sh [requests]
#
# Runs the release daemon under callgrind twice, local tiers only, access log on (to a file, as
# in production behind a log collector), and makes `requests` GETs of a 32 KiB memory hit over
# one keep-alive connection in the first run and 2 × `requests` in the second: through the
# Gradle front, and through the S3 front with a presigned URL (boto3), as the runner reads. Start-up,
# the PUT and shutdown cost the same in both runs, so
#
#   instructions per request = (Ir(run 2) - Ir(run 1)) / requests
#
# counts only what the extra requests cost the daemon (every thread). The same for a 4 MiB disk
# hit (per MiB served). Needs valgrind, python3 and boto3.
#
# BCP_INSTRUCTIONS_BIN=path measures that binary instead of building this tree's (a before/after
# from one checkout: keep a copy of the binary from before a change).
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}
command -v valgrind >/dev/null || { echo "instructions.sh needs valgrind (apt-get install valgrind)" >&2; exit 2; }
if [ -n "${BCP_INSTRUCTIONS_BIN:-}" ]; then
  bin=$BCP_INSTRUCTIONS_BIN
else
  cargo build --release --quiet
  bin=${CARGO_TARGET_DIR:-target}/release/build-cache-proxy
fi
work=$(mktemp -d /tmp/bcp-instructions.XXXXXX)
trap 'rm -rf "$work"' EXIT

# One daemon run under callgrind: PUT the body, GET it `count` times, stop; prints total Ir.
measure() { # front size count memory_max
  local front=$1 size=$2 count=$3 memory=$4 run=$work/run-$1-$2-$3
  mkdir -p "$run"
  cat > "$run/daemon.toml" <<CONF
[listen]
gradle = "127.0.0.1:0"
s3 = "127.0.0.1:0"
admin = ""
[[s3_api.buckets]]
name = "bench"
write = "local"
[[s3_api.credentials]]
access_key = "bench"
secret_key = "bench-secret-0123456789"
buckets = { bench = "readwrite" }
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
  local gradle s3
  gradle=$(sed -n 's/.*gradle=\([^ ]*\).*/\1/p' "$run/daemon.out")
  s3=$(sed -n 's/.* s3=\([^ ]*\).*/\1/p' "$run/daemon.out")
  [ -n "$gradle" ] && [ -n "$s3" ] || { echo "the daemon did not start:" >&2; cat "$run/daemon.log" >&2; exit 1; }
  python3 - "$front" "$gradle" "$s3" "$size" "$count" <<'PY'
import http.client, sys, urllib.parse
front, gradle, s3, size, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
key = "%032x" % size
body = bytes((i * 31) & 0xFF for i in range(size))
if front == "gradle":
    addr, path = gradle, f"/cache/{key}"
    conn = http.client.HTTPConnection(*addr.rsplit(":", 1), timeout=600)
    conn.request("PUT", path, body=body)
    assert conn.getresponse().read() is not None
else:
    import boto3, botocore.config
    client = boto3.client("s3", endpoint_url=f"http://{s3}", aws_access_key_id="bench",
                          aws_secret_access_key="bench-secret-0123456789", region_name="us-east-1",
                          config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    client.put_object(Bucket="bench", Key=key, Body=body)
    url = urllib.parse.urlsplit(client.generate_presigned_url(
        "get_object", Params={"Bucket": "bench", "Key": key}, ExpiresIn=3600))
    addr, path = s3, f"{url.path}?{url.query}"
    conn = http.client.HTTPConnection(*addr.rsplit(":", 1), timeout=600)
for _ in range(count):
    conn.request("GET", path)
    response = conn.getresponse()
    got = response.read()
    assert response.status == 200 and len(got) == size, (response.status, len(got))
PY
  kill -TERM "$pid"
  wait "$pid" || true
  # The "summary:" / "totals:" line of callgrind's output holds the total instruction count.
  awk '/^(summary|totals):/ {print $2; exit}' "$run/callgrind.out"
}

per_request() { # label front size memory_max unit_bytes
  local label=$1 front=$2 size=$3 memory=$4 unit=$5
  local one two
  one=$(measure "$front" "$size" "$requests" "$memory")
  two=$(measure "$front" "$size" $((requests * 2)) "$memory")
  awk -v label="$label" -v a="$one" -v b="$two" -v n="$requests" -v size="$size" -v unit="$unit" 'BEGIN {
    per = (b - a) / n
    if (unit > 0) printf "%-40s %14.0f instructions per request, %.0f per MiB\n", label, per, per * 1048576 / size
    else printf "%-40s %14.0f instructions per request\n", label, per }'
}

per_request "32 KiB Gradle hit, memory tier" gradle 32768 "64MiB" 0
per_request "32 KiB S3 front GET (presigned), memory" s3 32768 "64MiB" 0
per_request "4 MiB Gradle hit, disk tier" gradle 4194304 "0B" 1
