"""A short hash of each config's compiled train step (XLA's optimized HLO with source
locations stripped), to prove that a refactor changed no program: run it in the checkout
before and after the change, on the same machine, and compare the lines.

    PYTHONPATH=. python scripts/compiled_step_hash.py lenet resnet_small vgg_a_bn airbench94 \
        airbench94@bf16

(``NAME@bf16``: the config with ``half_precision=True``.)
(``PYTHONPATH=.``: the checkout you are in, not the one an editable install points at.)

Also runs in checkouts from before the re-layout (b38dc80 and older: steps in train.py).
The hash depends on the CPU (XLA compiles for the host's ISA) and on the jax version.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cifar_jax import models, optim

try:  # the layout since the re-layout
    from cifar_jax import parallel, steps

    try:  # cifar_jax/config/ since step 2 of the re-layout
        from cifar_jax.config import load_config_file
    except ImportError:
        from cifar_jax.config_base import load_config_file

    create_mesh, jit_steps, create_train_state = (
        parallel.create_mesh,
        steps.jit_steps,
        steps.create_train_state,
    )
except ImportError:  # b38dc80 and older
    from cifar_jax.sweep import load_config_file  # type: ignore[no-redef]

    from cifar_jax import train  # type: ignore[no-redef]

    create_mesh, jit_steps, create_train_state = (
        train.create_mesh,
        train.jit_steps,
        train.create_train_state,
    )

BATCH, STEPS_PER_EPOCH, TOTAL_STEPS = 128, 390, 3900


def compiled_train_step_text(spec: str) -> str:
    name, _, precision = spec.partition("@")
    config = load_config_file(str(Path("configs") / f"{name}.py"))
    if precision not in ("", "bf16"):
        raise SystemExit(f"{spec}: the only precision suffix is @bf16")
    if precision:
        config.half_precision = True
    config.batch_size = BATCH
    mesh = create_mesh()
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    model = models.build_model(config, 10)
    schedule = optim.learning_rate_schedule(config, STEPS_PER_EPOCH, TOTAL_STEPS)
    tx = optim.create_optimizer(config, schedule, TOTAL_STEPS, STEPS_PER_EPOCH)
    if config.get("lookahead_every", 0) > 0:  # airbench's lookahead keeps a second copy
        state = create_train_state(model, tx, 0, replicated, lookahead=True)
    else:
        state = create_train_state(model, tx, 0, replicated)
    half = np.full(3, 0.5, np.float32)
    train_step, _ = jit_steps(config, model, tx, half, half, mesh, TOTAL_STEPS)
    example = {
        "image": jax.ShapeDtypeStruct((BATCH, 32, 32, 3), jnp.uint8, sharding=batch),
        "label": jax.ShapeDtypeStruct((BATCH,), jnp.int32, sharding=batch),
    }
    text = train_step.lower(state, example).compile().as_text()
    # Drop what names the source rather than the program: the module header and the
    # file / stack-frame tables before the first computation, per-op metadata, frame ids.
    text = text[re.search(r"^(%|ENTRY )", text, flags=re.M).start() :]
    text = re.sub(r", metadata=\{[^}]*\}", "", text)
    text = re.sub(r", stack_frame_id=\d+", "", text)
    # Instruction and computation names renumbered in order of first appearance: XLA:CPU
    # sometimes numbers one instruction differently between processes compiling the same
    # program (airbench94@bf16: %convert.125 or %convert.127, the rest identical;
    # docs/notes/2026-12-07_bf16_compile_flake.md). The renaming keeps which name is which.
    names: dict[str, str] = {}
    return re.sub(r"%[\w.\-]+", lambda m: names.setdefault(m.group(), f"%n{len(names)}"), text)


def main(names: list[str]) -> None:
    if not names:
        raise SystemExit("usage: python scripts/compiled_step_hash.py CONFIG_ID [...]")
    for name in names:
        text = compiled_train_step_text(name)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        print(f"{name} train step: {digest} ({len(text):,} chars of HLO)")


if __name__ == "__main__":
    main(sys.argv[1:])
