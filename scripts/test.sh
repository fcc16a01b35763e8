#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the real clients and servers the tests
# drive, starts SeaweedFS (the S3 backend), runs `cargo test`, the chart test and the EKS guide's
# check, and stops
# SeaweedFS again.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test gradle_http`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

state=$(mktemp -d /tmp/bcp-seaweedfs.XXXXXX)
cleanup() { scripts/seaweedfs.sh stop "$state"; rm -rf "$state"; }
trap cleanup EXIT

if [ -z "${BCP_TEST_S3_ENDPOINT:-}" ]; then
  BCP_TEST_S3_ENDPOINT=$(scripts/seaweedfs.sh start "$state")
  export BCP_TEST_S3_ENDPOINT
fi
echo "S3 backend for tests: $BCP_TEST_S3_ENDPOINT" >&2

cargo test "$@"

# The whole suite (no arguments) also checks the Helm chart: lint, render, validate, the rendered
# config through check-config, and the dashboard's metrics against a live scrape; and every
# block of the EKS guide (docs/deploy-eks.md) with the tool it is written for, with its s3Upload
# client run against a daemon.
if [ $# -eq 0 ]; then
  scripts/chart-test.sh
  scripts/guide-check.sh
fi
