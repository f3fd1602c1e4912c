"""Proof that a refactor changed no program and no trained number: in a checkout of the
commit before it and one of the commit after, (1) the hash of each config's compiled train
step (scripts/compiled_step_hash.py, compiled in ``--repeats`` processes per side) and
(2) the ``state_sha256`` of a 6-step training on the real CIFAR-10; one record of both,
which docs/architecture.md renders.

    python scripts/relayout_proof.py --before=/tmp/wt_before --after=/tmp/wt_after \\
        --data_dir=../shared/data/cifar10 --out=docs/records/relayout_step2.json

Each checkout is run with ``PYTHONPATH=<checkout>`` from inside it, so its own code is
imported (not the editable install's); the hash script is this checkout's in both. The
hashes depend on the CPU and the jax version: compare only within one record.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HASHED = ["lenet", "resnet_small", "vgg_a_bn", "airbench94", "airbench94@bf16", "airbench94_muon"]
TRAINED = ["lenet", "resnet_small", "airbench94_muon"]
SHORT_RUN = ["--config.num_train_steps=6", "--config.batch_size=64", "--config.eval_batch_size=500"]


def _run(checkout: str, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": checkout}
    out = subprocess.run(
        [sys.executable, *args], cwd=checkout, env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed in {checkout}:\n{out.stderr[-3000:]}")
    return out.stdout


def side(checkout: str, data_dir: str, repeats: int) -> dict:
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=checkout, capture_output=True,
        text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # This checkout's hash script in both (it runs in older layouts too), in `repeats`
    # processes: a program whose compile is not the same text every time shows as two.
    script = str(Path(__file__).resolve().parent / "compiled_step_hash.py")
    hashes: dict[str, list[str]] = {name: [] for name in HASHED}
    for _ in range(repeats):
        for line in _run(checkout, [script, *HASHED]).splitlines():
            name, _, rest = line.partition(" train step: ")
            hashes[name].append(rest.split()[0])
    trained = {}
    for name in TRAINED:
        with tempfile.TemporaryDirectory() as workdir:
            _run(checkout, ["-m", "cifar_jax.main", f"--config=configs/{name}.py",
                            f"--workdir={workdir}", f"--config.data_dir={data_dir}",
                            *SHORT_RUN])  # fmt: skip
            with open(Path(workdir) / "results.json", encoding="utf-8") as f:
                results = json.load(f)
        trained[name] = {
            "state_sha256": results["state_sha256"],
            "test_accuracy": results["test_accuracy"],
            "commit": results["commit"],
        }
    return {"commit": commit, "compiled_train_step": hashes, "trained_6_steps": trained}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="checkout of the commit before")
    parser.add_argument("--after", required=True, help="checkout of the commit after")
    parser.add_argument("--data_dir", required=True, help="the CIFAR-10 folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=3, help="compiles per program and side")
    args = parser.parse_args(argv)
    data_dir = os.path.abspath(args.data_dir)
    before = side(os.path.abspath(args.before), data_dir, args.repeats)
    after = side(os.path.abspath(args.after), data_dir, args.repeats)
    import jax

    from cifar_jax import runtime

    record = {
        "command": "python scripts/relayout_proof.py " + " ".join(argv or sys.argv[1:]),
        "made": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": after["commit"],
        "cpu": runtime.cpu_description(),
        "jax": jax.__version__,
        "short_run": SHORT_RUN,
        "before": before,
        "after": after,
        # Each program compiled to the same texts before as after (a program whose compile
        # varies between processes counts as the same if both sides gave the same set).
        "same_programs": all(
            set(before["compiled_train_step"][n]) == set(after["compiled_train_step"][n])
            for n in HASHED
        ),
        # The programs that compiled to more than one text on either side.
        "varying_programs": [
            n
            for n in HASHED
            if len(set(before["compiled_train_step"][n] + after["compiled_train_step"][n])) > 1
        ],
        "same_weights": all(
            before["trained_6_steps"][n]["state_sha256"]
            == after["trained_6_steps"][n]["state_sha256"]
            for n in TRAINED
        ),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"{args.out}: same programs {record['same_programs']}, "
          f"same weights {record['same_weights']}")  # fmt: skip
    return 0 if record["same_programs"] and record["same_weights"] else 1


if __name__ == "__main__":
    sys.exit(main())
