#!/usr/bin/env bash
# Scores the S3 front with the public ceph/s3-tests suite, next to SeaweedFS on the same tests
# (docs/s3-front.md has the latest scores and what is left out).
#
#   scripts/s3-tests.sh <s3-tests checkout> [extra pytest arguments, e.g. -k multipart]
#
# It installs the suite's Python requirements into a virtualenv if they are missing, starts its
# own SeaweedFS (port 8633 by default, beside the test suite's 8333) and a daemon whose S3 front
# (port 8660) serves write-through buckets on that SeaweedFS, writes the suite's config for each,
# runs the selection of scripts/s3-tests/selection.py against SeaweedFS and then against the front,
# and prints the pass counts per group and the tests that pass on SeaweedFS but fail on the front.
# Needs the network only for pip, the first time. A developer tool, not part of CI.
#
# Environment: BCP_S3TESTS_WORK (scratch directory, default a new one under /tmp; results stay
# there), BCP_S3TESTS_VENV (virtualenv, default ~/.cache/build-cache-proxy/s3-tests-venv),
# BCP_S3TESTS_BIN (a daemon binary; default: `cargo build --bin build-cache-proxy`, copied into
# the scratch directory so a rebuild of the tree does not change it mid-run),
# BCP_S3TESTS_SEAWEEDFS_PORT, BCP_S3TESTS_FRONT_PORT, BCP_S3TESTS_POOL (how many buckets the
# front serves for the suite, each used once; default 1000), BCP_S3TESTS_TIMEOUT (seconds per test, default 120),
# BCP_S3TESTS_ONLY ("seaweedfs" or "front": run one target).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
suite=$(cd "${1:?usage: $0 <s3-tests checkout> [pytest args]}" && pwd)
shift
[ -f "$suite/s3tests/functional/test_s3.py" ] || { echo "$suite is not an s3-tests checkout" >&2; exit 2; }
work=${BCP_S3TESTS_WORK:-$(mktemp -d /tmp/bcp-s3-tests.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
venv=${BCP_S3TESTS_VENV:-$HOME/.cache/build-cache-proxy/s3-tests-venv}
sw_port=${BCP_S3TESTS_SEAWEEDFS_PORT:-8633}
front_port=${BCP_S3TESTS_FRONT_PORT:-8660}
pool=${BCP_S3TESTS_POOL:-1000}
timeout=${BCP_S3TESTS_TIMEOUT:-120}
only=${BCP_S3TESTS_ONLY:-}
echo "scratch: $work"

# 1. The suite's requirements (and pytest-timeout, so that one hanging test cannot stop the run).
py="$venv/bin/python"
if ! "$py" -c 'import boto3, botocore, munch, gevent, isodate, requests, pytz, httplib2, lxml, yaml, pytest, pytest_timeout' 2>/dev/null; then
  python3 -m venv "$venv"
  "$py" -m pip install -q -r "$suite/requirements.txt" pytest-timeout
fi

# 2. The daemon binary, copied so that the tree can be rebuilt meanwhile.
bin="$work/build-cache-proxy"
if [ -n "${BCP_S3TESTS_BIN:-}" ]; then
  cp "$BCP_S3TESTS_BIN" "$bin"
else
  (cd "$repo" && cargo build --bin build-cache-proxy)
  cp "$repo/target/debug/build-cache-proxy" "$bin"
fi

# The suite's three users; SeaweedFS knows them all, and so does the front.
main_key=bcp-main; main_secret=bcp-main-secret-0123456789
alt_key=bcp-alt; alt_secret=bcp-alt-secret-0123456789
tenant_key=bcp-tenant; tenant_secret=bcp-tenant-secret-0123456789
prefix=bcp-s3t-
buckets=$(seq -f "$prefix%g" 1 "$pool" | paste -sd, -)

daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  BCP_SEAWEEDFS_PORT=$sw_port "$repo/scripts/seaweedfs.sh" stop "$work/seaweedfs" || true
}
trap cleanup EXIT

# 3. SeaweedFS, with the three users as admins (the same rights the front's config gives them).
identity() { printf '{"name":"%s","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}' "$1" "$2" "$3"; }
printf '{"identities":[%s,%s,%s]}\n' "$(identity main $main_key $main_secret)" \
  "$(identity alt $alt_key $alt_secret)" "$(identity tenant $tenant_key $tenant_secret)" > "$work/seaweedfs-s3.json"
sw=$(BCP_SEAWEEDFS_PORT=$sw_port BCP_SEAWEEDFS_S3_CONFIG="$work/seaweedfs-s3.json" \
  "$repo/scripts/seaweedfs.sh" start "$work/seaweedfs")
front="http://127.0.0.1:$front_port"

# 4. The daemon: every pool bucket write-through into one backend bucket, under "<name>/".
"$py" - "$sw" "$main_key" "$main_secret" <<'PY'
import sys, boto3
endpoint, key, secret = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                  aws_secret_access_key=secret, region_name="us-east-1")
for _ in range(50):
    try:
        s3.create_bucket(Bucket="bcp-backend")
        break
    except s3.exceptions.BucketAlreadyOwnedByYou:
        break
    except Exception:  # SeaweedFS answers before its filer is ready
        import time; time.sleep(0.2)
else:
    raise SystemExit("could not create the backend bucket on SeaweedFS")
PY
grants=$(tr ',' '\n' <<<"$buckets" | sed 's/.*/"&" = "readwrite"/' | paste -sd, - | sed 's/,/, /g')
{
  cat <<TOML
[listen]
gradle = ""
admin = ""
s3 = "127.0.0.1:$front_port"
[disk]
dir = "$work/daemon/data"
max_size = "8GiB"
min_free = "0B"
[s3]
bucket = "bcp-backend"
endpoint = "$sw"
force_path_style = true
region = "us-east-1"
[log]
level = "warn"
TOML
  # The suite makes buckets public-read with ACLs, which the front does not have: its pool
  # buckets are configured readable without a signature instead (objects only, as that ACL).
  for b in ${buckets//,/ }; do printf '[[s3_api.buckets]]\nname = "%s"\nwrite = "through"\nanonymous = "read"\n' "$b"; done
  for k in "$main_key $main_secret" "$alt_key $alt_secret" "$tenant_key $tenant_secret"; do
    read -r ak sk <<<"$k"
    printf '[[s3_api.credentials]]\naccess_key = "%s"\nsecret_key = "%s"\nbuckets = { %s }\n' "$ak" "$sk" "$grants"
  done
} > "$work/daemon.toml"
mkdir -p "$work/daemon/data"
AWS_ACCESS_KEY_ID=$main_key AWS_SECRET_ACCESS_KEY=$main_secret AWS_EC2_METADATA_DISABLED=true \
  "$bin" serve --config "$work/daemon.toml" > "$work/daemon.out" 2> "$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 1 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$front/" || true)
  [ "$code" != 000 ] && break
  kill -0 "$daemon_pid" 2>/dev/null || { echo "the daemon exited:" >&2; cat "$work/daemon.log" >&2; exit 1; }
  sleep 0.1
done

# 5. The suite's config for each target.
suite_conf() { # port bucket-prefix-template
  cat <<CONF
[DEFAULT]
host = 127.0.0.1
port = $1
is_secure = False
ssl_verify = False
[fixtures]
bucket prefix = $2
[s3 main]
display_name = main
user_id = main
email = main@example.com
api_name = us-east-1
access_key = $main_key
secret_key = $main_secret
[s3 alt]
display_name = alt
user_id = alt
email = alt@example.com
access_key = $alt_key
secret_key = $alt_secret
[s3 tenant]
display_name = tenant
user_id = tenant
email = tenant@example.com
tenant = tenant
access_key = $tenant_key
secret_key = $tenant_secret
[iam]
display_name = iam
user_id = iam
email = iam@example.com
access_key = $alt_key
secret_key = $alt_secret
[iam root]
user_id = root
email = root@example.com
access_key = $alt_key
secret_key = $alt_secret
[iam alt root]
user_id = altroot
email = altroot@example.com
access_key = $tenant_key
secret_key = $tenant_secret
CONF
}
suite_conf "$sw_port" 's3t-{random}-' > "$work/s3tests-seaweedfs.conf"
suite_conf "$front_port" "$prefix" > "$work/s3tests-front.conf"

# 6. The selection, run against each target.
"$py" "$here/s3-tests/selection.py" "$suite" > "$work/selection.txt"
"$py" "$here/s3-tests/selection.py" "$suite" --left-out > "$work/left-out.txt"
mapfile -t ids < <(awk '{print "s3tests/functional/test_s3.py::" $2}' "$work/selection.txt")
run() { # name, then extra pytest arguments
  local name=$1; shift
  echo "running ${#ids[@]} tests against $name"
  (cd "$suite" && "$py" -m pytest -p no:cacheprovider -q --timeout "$timeout" \
    --junitxml "$work/$name.xml" "$@" "${ids[@]}" > "$work/$name.out" 2>&1) || true
  tail -n 1 "$work/$name.out"
}
if [ "$only" != front ]; then
  S3TEST_CONF="$work/s3tests-seaweedfs.conf" run seaweedfs "$@"
fi
if [ "$only" != seaweedfs ]; then
  S3TEST_CONF="$work/s3tests-front.conf" PYTHONPATH="$here/s3-tests" \
    BCP_S3TESTS_BUCKETS="$buckets" BCP_S3TESTS_ENDPOINT="$front" \
    BCP_S3TESTS_ACCESS_KEY=$main_key BCP_S3TESTS_SECRET_KEY=$main_secret \
    run front -p bcp_front "$@"
fi

# 7. The scores.
"$py" "$here/s3-tests/report.py" "$work" | tee "$work/summary.txt"
