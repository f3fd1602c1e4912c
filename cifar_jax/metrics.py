"""Metrics: clu metric collections for train/eval, and writers for the workdir.

Writers: ``clu.metric_writers`` imports TensorFlow at package import, and TensorFlow is a
~600 MB dependency we otherwise do not need, so the TensorBoard event files are written
with ``tensorboardX`` (same event format, TensorBoard reads them) behind a small writer
interface shaped like clu's (``write_scalars``, ``write_hparams``, ``flush``, ``close``).
Next to them, ``metrics.jsonl`` holds one JSON object per write, which is what the
report / compare tools read.
"""

# No `from __future__ import annotations`: clu reads the metric classes from annotations.
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import jax.numpy as jnp
from clu import metrics as clu_metrics


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Accuracy


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Accuracy


def batch_metrics(
    collection: type[clu_metrics.Collection],
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    loss: jnp.ndarray,
    mask: jnp.ndarray | None = None,
) -> clu_metrics.Collection:
    """Per-batch metrics (inside jit); ``loss`` is per example, ``mask`` drops padding."""
    return collection.single_from_model_output(logits=logits, labels=labels, loss=loss, mask=mask)


class JsonlWriter:
    """Appends ``{"step": s, "split": ..., name: value, ...}`` lines to a file."""

    def __init__(self, path: str):
        self._path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        record = {"step": int(step)}
        for name, value in scalars.items():
            value = float(value) if not isinstance(value, str) else value
            record[name] = None if isinstance(value, float) and not math.isfinite(value) else value
        self._file.write(json.dumps(record) + "\n")

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._file.write(json.dumps({"hparams": dict(hparams)}, default=str) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardWriter:
    """TensorBoard event files via tensorboardX; scalar names like ``train/loss``."""

    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=logdir)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        split = scalars.get("split", "")
        for name, value in scalars.items():
            if name == "split":
                continue
            tag = f"{split}/{name}" if split else name
            self._writer.add_scalar(tag, float(value), global_step=int(step))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in sorted(hparams.items()))
        self._writer.add_text("config", text, global_step=0)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiWriter:
    """Forwards every call to several writers; a no-op when given none (non-zero hosts)."""

    def __init__(self, writers: Sequence[Any]):
        self._writers = list(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        for w in self._writers:
            w.write_scalars(step, scalars)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        for w in self._writers:
            w.write_hparams(hparams)

    def flush(self) -> None:
        for w in self._writers:
            w.flush()

    def close(self) -> None:
        for w in self._writers:
            w.close()


class DeferredWriter:
    """A writer that keeps every record in memory until :meth:`open` creates the files
    (then writes them, and everything after, straight through). A rerun in a workdir that
    holds a good run writes nothing there until it has saved a checkpoint (train.py)."""

    def __init__(self, workdir: str, enabled: bool):
        self._workdir = workdir
        self._enabled = enabled
        self._writer: MultiWriter | None = None
        self._calls: list[tuple[str, tuple[Any, ...]]] = []

    @property
    def opened(self) -> bool:
        return self._writer is not None

    def open(self) -> None:
        if self._writer is not None:
            return
        self._writer = create_writer(self._workdir, self._enabled)
        for name, args in self._calls:
            getattr(self._writer, name)(*args)
        self._calls = []

    def _call(self, name: str, *args: Any) -> None:
        if self._writer is None:
            self._calls.append((name, args))
        else:
            getattr(self._writer, name)(*args)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._call("write_scalars", step, dict(scalars))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._call("write_hparams", dict(hparams))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def create_writer(workdir: str, enabled: bool = True) -> MultiWriter:
    """JSON lines + TensorBoard under ``workdir``; nothing if ``enabled`` is False."""
    if not enabled:
        return MultiWriter([])
    return MultiWriter(
        [
            JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
            TensorBoardWriter(os.path.join(workdir, "tensorboard")),
        ]
    )


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (hparams lines skipped)."""
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if "step" in r]
