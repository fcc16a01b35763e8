#!/usr/bin/env bash
# Starts one SeaweedFS S3 server on loopback for the test run: `scripts/seaweedfs.sh start DIR`
# prints the endpoint once it answers; `scripts/seaweedfs.sh stop DIR` stops it.
# Credentials are AK / SK (tests/common/s3.rs uses the same), or the identities of the
# SeaweedFS s3.json file named by BCP_SEAWEEDFS_S3_CONFIG.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?state directory}
port=${BCP_SEAWEEDFS_PORT:-8333}
# Its other servers listen too (gRPC on each port + 10000): next to the S3 port when that is
# moved, so a second SeaweedFS (the load harness's) can run beside the tests' one.
if [ "$port" = 8333 ]; then
  others=()
else
  others=(-master.port=$((port + 1)) -volume.port=$((port + 2)) -filer.port=$((port + 3)) -admin.port=$((port + 4)))
fi

case "$cmd" in
start)
  mkdir -p "$dir/data" "$dir/log"
  if [ -n "${BCP_SEAWEEDFS_S3_CONFIG:-}" ]; then
    # Other identities (scripts/s3-tests.sh gives the suite's three users their keys).
    cp "$BCP_SEAWEEDFS_S3_CONFIG" "$dir/s3.json"
  else
    cat > "$dir/s3.json" <<'JSON'
{"identities":[{"name":"test","credentials":[{"accessKey":"AK","secretKey":"SK"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  fi
  weed -logdir="$dir/log" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$port" -s3.config="$dir/s3.json" \
    -s3.localSocket="$dir/s3.sock" -filer.localSocket="$dir/filer.sock" \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 "${others[@]}" \
    >"$dir/weed.out" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 600); do
    # Any HTTP answer from the S3 port (403 without credentials) means it is up.
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)
    if [ "$code" != "000" ]; then
      echo "http://127.0.0.1:$port"
      exit 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "SeaweedFS exited; its output:" >&2
      cat "$dir/weed.out" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "SeaweedFS did not answer on port $port within 60s" >&2
  exit 1
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
