"""Measure the GPU check's training-pair gate on the CPU: the pair's model and arguments
(scripts/gpu_check.sh's PAIR, scripts/gpu_check.py's PAIR_MODEL) on the partial data the
bundle carries (data_batch_1.bin: 10,000 training images; test_batch.bin), over several
seeds, so that ``MIN_ACCURACY`` sits far under what any seed reaches. Writes the record
that docs/gpu.md's gate table is rendered from (scripts/render_docs.py).

    python scripts/gpu_gate_seeds.py --data=../shared/data/cifar10 [--seeds=8]
        [--out=docs/records/gpu_gate.json]

Each seed is one `python -m cifar_jax.main` run in a temporary workdir (about 40 s on 2
cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# The pair's arguments as gpu_check.sh gives them on a GPU (PAIR) with the partial data.
PAIR_ARGS = [
    "--config.num_train_steps=300",
    "--config.val_examples=0",
    "--config.checkpoint_every_steps=100000",
    "--config.deterministic=true",
    "--config.data_source=files",
    "--config.allow_partial_train_files=true",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a folder with the official binary files")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "docs/records/gpu_gate.json"))
    args = parser.parse_args()
    import gpu_check

    from cifar_jax import runtime

    found = list(Path(args.data).expanduser().rglob("data_batch_1.bin"))
    if not found:
        sys.exit(f"gpu_gate_seeds: no data_batch_1.bin under {args.data}")
    source = found[0].parent
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data" / "cifar-10-batches-bin"
        data.mkdir(parents=True)
        for name in ("data_batch_1.bin", "test_batch.bin", "batches.meta.txt"):
            if (source / name).exists():
                os.symlink(source / name, data / name)
        for seed in range(args.seeds):
            workdir = Path(tmp) / f"seed_{seed}"
            cmd = [
                sys.executable, "-m", "cifar_jax.main",
                f"--config={ROOT}/configs/{gpu_check.PAIR_MODEL}.py",
                *PAIR_ARGS, f"--config.data_dir={data.parent}", f"--config.seed={seed}",
                f"--workdir={workdir}",
            ]  # fmt: skip
            subprocess.run(cmd, check=True, cwd=tmp, stdout=subprocess.DEVNULL)
            r = json.loads((workdir / "results.json").read_text())
            runs.append(
                {
                    "seed": seed,
                    "test_accuracy": r["test_accuracy"],
                    "train_examples": r["train_examples"],
                    "test_examples": r["test_examples"],
                    "state_sha256": r["state_sha256"],
                    "convolutions": r.get("convolutions"),
                    "commit": r["commit"],
                    "cpu": r["cpu"],
                }
            )
            print(f"seed {seed}: test accuracy {r['test_accuracy']:.4f}", flush=True)
    acc = [r["test_accuracy"] for r in runs]
    record = {
        "what": "the GPU check's training pair on its partial data, on the CPU, per seed",
        "command": f"python scripts/gpu_gate_seeds.py --data=... --seeds={args.seeds}",
        "model": gpu_check.PAIR_MODEL,
        "arguments": PAIR_ARGS,
        "data": "data_batch_1.bin + test_batch.bin of the official binary release",
        "made": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": runtime.git_commit(),
        "cpu": runtime.cpu_description(),
        "gate": gpu_check.MIN_ACCURACY,
        "mean": statistics.fmean(acc),
        "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
        "min": min(acc),
        "max": max(acc),
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"{args.out}: mean {record['mean']:.4f}, std {record['std']:.4f}, "
        f"range {record['min']:.4f}-{record['max']:.4f}; gate {gpu_check.MIN_ACCURACY}"
    )
    return 0 if record["min"] > gpu_check.MIN_ACCURACY else 1


if __name__ == "__main__":
    sys.exit(main())
