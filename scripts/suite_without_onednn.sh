#!/usr/bin/env bash
# The whole test suite with oneDNN switched off (CIFAR_JAX_ONEDNN=0), as on the GPU image,
# which has no oneDNN: every test must pass or skip saying oneDNN is off. Not a stage of
# .ci/run: it takes as long as the suite (20-35 minutes on the 2-core machines), and CI
# runs the suite once with oneDNN plus scripts/py312_check.sh, which runs the GPU check's
# tests without oneDNN. Run it by hand from a clean checkout (a commit changed under a
# running suite gives false failures); it writes its record, which docs/gpu.md cites:
#
#   bash scripts/suite_without_onednn.sh [RECORD]   (default docs/records/suite_without_onednn.json)
#
# Uses the active Python (the .ci/run venv: pip install -e ".[test]" and torch==2.13.0).
set -uo pipefail
cd "$(dirname "$0")/.."
CIFAR_JAX_ONEDNN=0 exec bash scripts/suite_durations.sh \
  "${1:-docs/records/suite_without_onednn.json}" "${@:2}"
