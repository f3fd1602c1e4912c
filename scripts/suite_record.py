"""A record of one pytest run of the suite, from its JUnit XML: commit, CPU, Python / jax,
counts, failures, skip reasons, seconds, the load on the machine, and where the time went
(seconds per test file, the slowest tests). Written by scripts/suite_durations.sh (the
suite as CI runs it) and scripts/suite_without_onednn.sh; docs/*.md render it.

    python scripts/suite_record.py JUNIT RECORD STARTED_UTC EXIT_CODE WHAT LOADAVG_BEFORE
"""

from __future__ import annotations

import collections
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET

import jax

# The checkout the suite ran in (python puts scripts/ first on the path, and an editable
# install may point at another checkout): its commit is the one the record names.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cifar_jax import runtime  # noqa: E402

SLOWEST = 30


def test_file(classname: str) -> str:
    """``tests/test_x.py`` of a JUnit classname (``tests.test_x`` or ``tests.test_x.TestY``)."""
    parts = classname.split(".")
    for i, part in enumerate(parts):
        if part.startswith("test_"):
            return "/".join(parts[: i + 1]) + ".py"
    return classname or "?"


def record(junit: str, started: str, rc: int, what: str, load_before: str) -> dict:
    suite = ET.parse(junit).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    failed, skips = [], collections.Counter()
    per_file: collections.Counter = collections.Counter()
    tests = []
    for case in suite.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        seconds = float(case.get("time") or 0.0)
        per_file[test_file(case.get("classname", ""))] += seconds
        tests.append((seconds, name))
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        elif (skip := case.find("skipped")) is not None:
            skips[skip.get("message", "")[:160]] += 1
    out = {
        "what": what,
        "started_utc": started,
        "commit": runtime.git_commit(),
        "cpu": runtime.cpu_description(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "exit_code": rc,
        "tests": int(suite.get("tests")),
        "failed": failed,
        "skipped": int(suite.get("skipped")),
        "skip_reasons": dict(skips.most_common()),
        "seconds": round(float(suite.get("time")), 1),
        # The 1-minute load average when the run started and ended: above the 2 cores,
        # something else shared the machine and the seconds are longer than CI's.
        "loadavg_before": float(load_before),
        "loadavg_after": round(os.getloadavg()[0], 2),
        "seconds_by_file": {k: round(v, 1) for k, v in per_file.most_common()},
        "slowest_tests": [[name, round(s, 1)] for s, name in sorted(tests, reverse=True)[:SLOWEST]],
    }
    out["passed"] = out["tests"] - len(failed) - out["skipped"]
    return out


def main(argv: list[str]) -> int:
    junit, path, started, rc, what, load_before = argv
    out = record(junit, started, int(rc), what, load_before)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"{path}: {out['passed']} passed, {out['skipped']} skipped, {len(out['failed'])} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
