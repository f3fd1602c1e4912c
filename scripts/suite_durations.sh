#!/usr/bin/env bash
# The suite as CI runs it (.ci/run: CIFAR_JAX_REQUIRE_TORCH=1 pytest -q), timed per test:
# writes a record of where the time goes (seconds per test file, the 30 slowest tests,
# the machine's load before and after), which docs/usage.md renders ("The test suite").
# Run it from a clean checkout with the machine to itself (the record says the load):
#
#   bash scripts/suite_durations.sh [RECORD]   (default docs/records/suite_durations.json)
#
# scripts/suite_without_onednn.sh runs it with CIFAR_JAX_ONEDNN=0.
# Uses the active Python (the .ci/run venv: pip install -e ".[test]" and torch==2.13.0).
set -uo pipefail
cd "$(dirname "$0")/.."
record="${1:-docs/records/suite_durations.json}"
junit=$(mktemp --suffix=.xml)
trap 'rm -f "$junit"' EXIT
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load=$(cut -d' ' -f1 /proc/loadavg)
CIFAR_JAX_REQUIRE_TORCH=1 python -m pytest -q -p no:cacheprovider --junitxml="$junit" "${@:2}"
rc=$?
what="pytest -q with ${CIFAR_JAX_ONEDNN:+CIFAR_JAX_ONEDNN=$CIFAR_JAX_ONEDNN }CIFAR_JAX_REQUIRE_TORCH=1"
python scripts/suite_record.py "$junit" "$record" "$started" "$rc" \
  "$what (scripts/suite_durations.sh; .ci/run runs it without CIFAR_JAX_ONEDNN)" "$load"
exit $rc
