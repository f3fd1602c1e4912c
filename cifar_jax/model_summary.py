"""Per-layer parameter table of a config's model, without loading any data.

    python -m cifar_jax summary --config=configs/lenet.py [--config.widths='(64,128)']

The model is initialised abstractly (``jax.eval_shape``) on one 32x32x3 image, so even
the 18.6M-parameter DeepNet summarises in about a second. The last line is always
``Trainable params: N`` (BatchNorm scale/bias count, running statistics do not, as in
torch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.errors import ConfigError
from cifar_jax.kernels import lowering
from cifar_jax.models import build_model, count_trainable_params, model_description

INPUT_SHAPE = (1, 32, 32, 3)


def num_classes_for(config: Any) -> int:
    """Classes the model must predict, from the data fields alone (no data is read)."""
    dataset = config.dataset
    if dataset == "cifar10":
        n = 10
    elif dataset == "cifar100":
        if config.label_type not in ("fine", "coarse"):
            raise ConfigError(
                f"Unknown label_type {config.label_type!r}. Allowed values: fine, coarse. "
                f"Fix: set --config.label_type=fine or coarse."
            )
        n = 20 if config.label_type == "coarse" else 100
    else:
        raise ConfigError(
            f"Unknown dataset {dataset!r}. Allowed values: cifar10, cifar100. "
            f"Fix: set --config.dataset to one of them."
        )
    subset = int(config.class_subset)
    if subset < 0 or subset > n:
        raise ConfigError(
            f"config.class_subset={subset} but {dataset} has {n} classes. Fix: use 0 (all "
            f"classes) or a value in 1..{n}."
        )
    return subset or n


def _abstract_init(config: Any) -> tuple[nn.Module, Any, list[list[Any]]]:
    """Model, abstract variables, and one [path, type, output shape] row per module call."""
    model = build_model(config, num_classes_for(config))
    rows: list[list[Any]] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        row = [context.module.path, type(context.module).__name__, None]
        rows.append(row)  # before the call, so parents precede their children
        out = next_fun(*args, **kwargs)
        row[2] = jax.tree_util.tree_map(lambda a: tuple(a.shape), out)
        return out

    def init(x: jax.Array) -> Any:
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        with nn.intercept_methods(record):
            return model.init(rngs, x, train=False)

    variables = jax.eval_shape(init, jnp.zeros(INPUT_SHAPE, jnp.float32))
    return model, variables, rows


def trainable_param_count(config: Any) -> int:
    """Trainable parameters of the config's model (abstract init: fast, no data)."""
    return count_trainable_params(_abstract_init(config)[1]["params"])


def _own_params(params: Mapping[str, Any], path: tuple[str, ...]) -> int:
    """Parameters owned directly by the module at ``path`` (not by its submodules)."""
    node: Any = params
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return 0
        node = node[key]
    return count_trainable_params([v for v in node.values() if not isinstance(v, Mapping)])


def _format_shape(shape: Any) -> str:
    if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
        return "(N, " + ", ".join(str(d) for d in shape[1:]) + ")"
    return str(shape)


def summarize(config: Any) -> str:
    """The per-layer table; the last line is ``Trainable params: N`` (with commas)."""
    model, variables, rows = _abstract_init(config)
    params = variables["params"]
    table = [("Layer", "Type", "Output shape", "Params")]
    for path, kind, shape in rows:
        name = "  " * (len(path) - 1) + path[-1] if path else config.model
        own = _own_params(params, path)
        table.append((name, kind, _format_shape(shape), f"{own:,}" if own else ""))
    widths = [max(len(r[i]) for r in table) for i in range(4)]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(
            [
                r[0].ljust(widths[0]),
                r[1].ljust(widths[1]),
                r[2].ljust(widths[2]),
                r[3].rjust(widths[3]),
            ]
        ).rstrip()

    rule = "-" * len(line(table[0]).ljust(sum(widths) + 6))
    total = count_trainable_params(params)
    stats = count_trainable_params(variables.get("batch_stats", {}))
    out = [
        f"Model: {config.model} ({model_description(config.model)})",
        f"Input: {INPUT_SHAPE[1:]} NHWC, classes: {num_classes_for(config)}, "
        f"activation: {config.activation}",
        rule,
        line(table[0]),
        rule,
        *(line(r) for r in table[1:]),
        rule,
        f"BatchNorm running statistics (not trainable): {stats:,}",
        f"Trainable params: {total:,}",
    ]
    return "\n".join(out)


PLATFORMS = lowering.PLATFORMS
_CUSTOM_CALL = re.compile(r'stablehlo\.custom_call @([\w.]+)|call_target_name = "([^"]+)"')
_OP = re.compile(r'^\s*(?:%[^=]+= )?"?(?:stablehlo|chlo|sdy|mhlo)\.', re.M)


def lower_steps(config: Any, platform: str, mesh: Any = None) -> dict[str, str]:
    """The StableHLO of ``config``'s real train, eval and TTA steps (the ones
    :func:`cifar_jax.train.train_and_evaluate` jits), lowered for ``platform`` with
    ``jax.export`` on this machine, whatever its devices: no data is read, no step runs.
    """
    from cifar_jax import experiment
    from cifar_jax.kernels import onednn

    if platform not in PLATFORMS:
        raise ConfigError(
            f"cannot lower for {platform!r}: choose one of {', '.join(PLATFORMS)} "
            "(--lower_for=cuda for NVIDIA GPUs)."
        )
    exp = experiment.build_abstract(config, num_classes_for(config), mesh=mesh)
    jitted = {"train": exp.train_step, "eval": exp.eval_step}
    if config.tta != "none":
        jitted["tta"] = exp.tta_eval_step(config.tta)
    examples, eval_examples = exp.example_batch(), exp.example_batch(mask=True)
    checks = [jax.export.DisabledSafetyCheck.custom_call(onednn.TARGET_NAME)]
    out = {}
    for name, step in jitted.items():
        args = (exp.state, examples if name == "train" else eval_examples)
        exported = jax.export.export(step, platforms=[platform], disabled_checks=checks)(*args)
        out[name] = exported.mlir_module()
    return out


def custom_calls(module: str) -> list[str]:
    """The custom-call targets a lowered module calls, sorted."""
    return sorted({a or b for a, b in _CUSTOM_CALL.findall(module)})


def lowering_line(module: str, platform: str, step: str = "train") -> str:
    n_ops = len(_OP.findall(module))
    return f"lowered {step} step for {platform}: {n_ops} ops; custom calls: {custom_calls(module)}"
