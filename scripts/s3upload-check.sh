#!/usr/bin/env bash
# Checks the guide's answer to "how does the s3Upload step reach the node with the pod's own
# role" (docs/deploy-eks.md, section 8) with the SDK the gradle-s3 plugin runs on (the AWS SDK
# for Java v1 jar that scripts/setup.sh fetches for the tests):
#
#   - the client is built as the guide's NodeS3Upload.getS3Client() builds it (endpoint
#     http://s3.eu-west-1.amazonaws.com, path-style, the SDK's default credential chain), and
#     does what the plugin's S3Upload action does (doesObjectExist, putObject), then reads back;
#   - the pod's role: only IRSA's variables are set (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE,
#     AWS_REGION, AWS_STS_REGIONAL_ENDPOINTS), no keys. The SDK trades the token at "STS"
#     (scripts/guide/fake_sts.py under STS's name over HTTPS, trusted through a trust store, which
#     hands out real temporary credentials for the role from SeaweedFS's own STS) and signs with
#     them; SeaweedFS checks the session token as S3 would;
#   - the host alias: the JVM's hosts file maps s3.eu-west-1.amazonaws.com to 127.77.0.11, where
#     the daemon's forward listener is on port 80 (the node's link-local address and host port),
#     and the daemon forwards to SeaweedFS, which plays S3 and checks the signature.
#
# Then it checks what the node saw: the upload forwarded (200), the read-back served from the
# node's copy after S3's 304, the object in "S3", and STS asked for the pod's role with its token.
#
# It starts its own SeaweedFS (with its STS and the role, which the tests' one has not) on port
# $BCP_STS_SEAWEEDFS_PORT (default 18633, and the four after it). Needs root for ports 80 and 443
# on 127.77.0.x.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
say() { printf 's3upload-check: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

region=eu-west-1
node_ip=127.77.0.11
sts_ip=127.77.0.12
bucket=acme-artifacts
key=libs/demo-1.0.jar
role=arn:aws:iam::123456789012:role/gradle-build

jar=${XDG_CACHE_HOME:-$HOME/.cache}/build-cache-proxy/aws-java-sdk-bundle-1.11.901.jar
[ -f "$jar" ] || fail "$jar is missing (scripts/setup.sh fetches it)"
bin=${BCP_DAEMON_BIN:-}
if [ -z "$bin" ]; then
  target=${CARGO_TARGET_DIR:-$repo/target}
  bin=$(ls -t "$target/release/build-cache-proxy" "$target/debug/build-cache-proxy" 2>/dev/null | head -1 || true)
  [ -n "$bin" ] || { cargo build --quiet --bin build-cache-proxy; bin=$target/debug/build-cache-proxy; }
fi

work=$(mktemp -d /tmp/bcp-s3upload-check.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

# "S3" and its STS: SeaweedFS with a static identity (AK/SK, which the fake STS uses) and the role
# the build pod's ServiceAccount carries in the guide.
port=${BCP_STS_SEAWEEDFS_PORT:-18633}
mkdir -p "$work/weed/data" "$work/weed/log"
cat >"$work/weed/iam.json" <<JSON
{"identities": [{"name": "test", "credentials": [{"accessKey": "AK", "secretKey": "SK"}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]}],
 "sts": {"tokenDuration": 3600000000000, "maxSessionLength": 43200000000000, "issuer": "guide-check",
         "signingKey": "$(head -c 32 /dev/urandom | base64)"},
 "policy": {"defaultEffect": "Deny", "storeType": "memory"},
 "roles": [{"roleName": "gradle-build", "roleArn": "$role", "attachedPolicies": ["artifacts"],
            "trustPolicy": {"Version": "2012-10-17",
                            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": ["sts:AssumeRole"]}]}}],
 "policies": [{"name": "artifacts", "document": {"Version": "2012-10-17", "Statement": [
   {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
    "Resource": ["arn:aws:s3:::$bucket", "arn:aws:s3:::$bucket/*"]},
   {"Effect": "Allow", "Action": "sts:ValidateSession", "Resource": "*"}]}}]}
JSON
weed -logdir="$work/weed/log" mini -dir="$work/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -s3.port="$port" -master.port=$((port + 1)) -volume.port=$((port + 2)) -filer.port=$((port + 3)) \
  -admin.port=$((port + 4)) -s3.config="$work/weed/iam.json" -s3.iam.config="$work/weed/iam.json" \
  -s3.localSocket="$work/weed/s3.sock" -filer.localSocket="$work/weed/filer.sock" \
  -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 >"$work/weed/out" 2>&1 &
pids+=($!)
endpoint=http://127.0.0.1:$port
for _ in $(seq 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$endpoint/" || true)" != 000 ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/weed/out" >&2; fail "SeaweedFS exited"; }
  sleep 0.1
done
say "S3 and STS (SeaweedFS) at $endpoint, daemon $bin"

# A fresh bucket in "S3" (the artifact bucket of the guide).
s3py() { python3 - "$endpoint" "$@"; }
s3py "$bucket" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="AK", aws_secret_access_key="SK",
                  region_name="us-east-1")
try:
    s3.create_bucket(Bucket=sys.argv[2])
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2]):
    for o in page.get("Contents", []):
        s3.delete_object(Bucket=sys.argv[2], Key=o["Key"])
PY

# "STS" over HTTPS, with a certificate for STS's names that the JVM trusts through a trust store.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=sts \
  -addext "subjectAltName=DNS:sts.$region.amazonaws.com,DNS:sts.amazonaws.com" \
  -keyout "$work/sts.key" -out "$work/sts.crt" 2>/dev/null
keytool -importcert -noprompt -alias fake-sts -file "$work/sts.crt" -keystore "$work/trust.p12" \
  -storetype PKCS12 -storepass changeit >/dev/null 2>&1
python3 scripts/guide/fake_sts.py "$sts_ip" 443 "$work/sts.crt" "$work/sts.key" "$endpoint" "$work/sts.log" \
  >"$work/sts.out" 2>&1 &
pids+=($!)

# The node: the forward mode only, on "the link-local address", port 80.
cat >"$work/node.toml" <<TOML
[listen]
gradle = ""
s3 = "$node_ip:80"
admin = "127.0.0.1:0"
drain_timeout = "1s"
[disk]
dir = "$work/node"
[[s3_api.forward]]
namespace = "s3-$region"
hosts = ["s3.$region.amazonaws.com"]
endpoint = "$endpoint"
TOML
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$bin" serve --config "$work/node.toml" \
  >"$work/node.out" 2>"$work/node.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q ready "$work/node.out" 2>/dev/null && grep -q ready "$work/sts.out" 2>/dev/null && break
  sleep 0.1
done
grep -q ready "$work/node.out" || { cat "$work/node.log" >&2; fail "the daemon did not start"; }
grep -q ready "$work/sts.out" || { cat "$work/sts.out" >&2; fail "the fake STS did not start"; }
admin=$(grep -o 'admin=[^ ]*' "$work/node.out" | cut -d= -f2)

# The build pod: IRSA's variables and a token file, the host alias, the trust store.
printf '%s\n' "127.77.0.11 s3.$region.amazonaws.com" "$sts_ip sts.$region.amazonaws.com sts.amazonaws.com" \
  >"$work/hosts"
echo "eyJhbGciOiJSUzI1NiJ9.guide-check-projected-token.sig" >"$work/token"
head -c $((3 << 20)) /dev/urandom >"$work/demo-1.0.jar"
out=$(env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE \
  -u JAVA_TOOL_OPTIONS -u AWS_CONTAINER_CREDENTIALS_FULL_URI -u AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
  HOME="$work" AWS_EC2_METADATA_DISABLED=true AWS_REGION=$region AWS_STS_REGIONAL_ENDPOINTS=regional \
  AWS_ROLE_ARN=$role AWS_WEB_IDENTITY_TOKEN_FILE="$work/token" \
  java -Djdk.net.hosts.file="$work/hosts" -Djavax.net.ssl.trustStore="$work/trust.p12" \
  -Djavax.net.ssl.trustStorePassword=changeit -cp "$jar" scripts/guide/PodRoleS3Upload.java \
  "$region" "$bucket" "$key" "$work/demo-1.0.jar" 2>&1) \
  || { echo "$out" >&2; cat "$work/node.log" >&2; fail "the upload with the pod's role failed"; }
echo "$out" | sed 's/^/  java: /' >&2

# The plugin's own chain, in the same pod: no web identity provider, so no credentials.
plugin=$(env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE \
  -u JAVA_TOOL_OPTIONS -u AWS_CONTAINER_CREDENTIALS_FULL_URI -u AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
  HOME="$work" AWS_EC2_METADATA_DISABLED=true AWS_REGION=$region AWS_ROLE_ARN=$role \
  AWS_WEB_IDENTITY_TOKEN_FILE="$work/token" java -cp "$jar" scripts/guide/PodRoleS3Upload.java --plugin-chain 2>&1)
grep -q "plugin-chain none" <<<"$plugin" \
  || { echo "$plugin" >&2; fail "the plugin's own credential chain found credentials in an IRSA-only pod"; }
say "ok: the plugin's own chain finds no credentials from IRSA alone (why the guide overrides getS3Client)"

md5=$(md5sum "$work/demo-1.0.jar" | cut -d' ' -f1)
grep -q "credentials BasicSessionCredentials session-token true" <<<"$out" \
  || fail "the SDK did not sign with the role's temporary credentials"
grep -q "exists-before false" <<<"$out" || fail "doesObjectExist before the upload"
grep -q "put-etag $md5" <<<"$out" || fail "putObject's ETag is not the jar's MD5"
grep -q "exists-after true" <<<"$out" || fail "doesObjectExist after the upload"
grep -q "read-back $key" <<<"$out" || fail "read-back"

python3 - "$work/sts.log" "$role" "$work/token" <<'PY' || fail "STS was not asked for the pod's role"
import json, sys
calls = [json.loads(l) for l in open(sys.argv[1])]
token = open(sys.argv[3]).read().strip()
assert calls, "no STS call"
for c in calls:
    assert c["Action"] == "AssumeRoleWithWebIdentity", c
    assert c["RoleArn"] == sys.argv[2], c
    assert c["WebIdentityToken"] == token, c
print(f"s3upload-check: STS: {len(calls)} AssumeRoleWithWebIdentity for {sys.argv[2]} at {calls[0]['host']}",
      file=sys.stderr)
PY

s3py "$bucket" "$key" "$work/demo-1.0.jar" <<'PY' || fail "the object is not in S3 as uploaded"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="AK", aws_secret_access_key="SK",
                  region_name="us-east-1")
assert s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])["Body"].read() == open(sys.argv[4], "rb").read()
PY

metrics=$(curl -sf "http://$admin/metrics") || fail "no /metrics"
metric() { awk -v m="$1" '$1 == m { print $2 }' <<<"$metrics"; }
put=$(metric 'build_cache_proxy_forward_requests_total{operation="PutObject",status="200"}')
hit=$(metric 'build_cache_proxy_forward_requests_total{operation="GetObject",status="304"}')
[ "${put:-0}" != 0 ] || { echo "$metrics" | grep forward >&2; fail "the upload did not go through the node"; }
[ "${hit:-0}" = 1 ] || { echo "$metrics" | grep forward >&2; fail "the read-back was not served from the node's copy"; }
say "ok: the s3Upload client with the pod's role went through the node (PutObject 200, read-back 304 from the node's copy)"
