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
record="${1:-docs/records/suite_without_onednn.json}"
junit=$(mktemp --suffix=.xml)
trap 'rm -f "$junit"' EXIT
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CIFAR_JAX_ONEDNN=0 CIFAR_JAX_REQUIRE_TORCH=1 python -m pytest -q -p no:cacheprovider \
  --junitxml="$junit" "${@:2}"
rc=$?
python - "$junit" "$record" "$started" "$rc" <<'PY'
import collections
import json
import platform
import sys
import xml.etree.ElementTree as ET

import jax

from cifar_jax import runtime

junit, record, started, rc = sys.argv[1:]
suite = ET.parse(junit).getroot()
suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
failed, skips = [], collections.Counter()
for case in suite.iter("testcase"):
    name = f"{case.get('classname')}::{case.get('name')}"
    if case.find("failure") is not None or case.find("error") is not None:
        failed.append(name)
    elif (skip := case.find("skipped")) is not None:
        skips[skip.get("message", "")[:160]] += 1
out = {
    "what": "pytest -q with CIFAR_JAX_ONEDNN=0 CIFAR_JAX_REQUIRE_TORCH=1 "
    "(scripts/suite_without_onednn.sh)",
    "started_utc": started,
    "commit": runtime.git_commit(),
    "cpu": runtime.cpu_description(),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "exit_code": int(rc),
    "tests": int(suite.get("tests")),
    "failed": failed,
    "skipped": int(suite.get("skipped")),
    "skip_reasons": dict(skips.most_common()),
    "seconds": round(float(suite.get("time")), 1),
}
out["passed"] = out["tests"] - len(failed) - out["skipped"]
with open(record, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(f"{record}: {out['passed']} passed, {out['skipped']} skipped, {len(failed)} failed")
PY
exit $rc
