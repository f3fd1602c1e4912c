"""Optimization analyses of report 001: loss landscapes and the BatchNorm study.

Loss landscape around a trained run (Li et al. 2018, "Visualizing the Loss Landscape
of Neural Nets")::

    python -m cifar_jax analyze landscape --workdir=runs/resnet [--checkpoint=latest]
        [--num_images=500] [--split=test] [--points_1d=41] [--points_2d=21] [--span=1]
        [--seed=0] [--out=DIR]

The loss (and accuracy) of the weights ``w + a*d1 + b*d2`` on a fixed, seeded subset of
``num_images`` images, for ``a, b`` in ``[-span, span]``. ``d1`` and ``d2`` are random
Gaussian directions, *filter-normalized*: each filter (output channel of a conv kernel,
output unit of a dense kernel) of a direction is rescaled to the norm of the same filter
of the weights; biases and BatchNorm parameters get no perturbation (Li et al.'s
``ignore biasbn``), and BatchNorm uses its running statistics. Writes into
``<workdir>/analysis/landscape/`` (or ``--out``): ``landscape_1d.png`` (along ``d1``),
``landscape_2d.png`` (contours and surface), ``landscape.npz`` (every number) and
``landscape.json`` (the settings and a summary).

BatchNorm study (report 001, section 10, after Santurkar et al. 2018, "How Does Batch
Normalization Help Optimization?")::

    python -m cifar_jax analyze batchnorm --config=configs/vgg_a_bn.py \
        --compare_config=configs/vgg_a.py [--lrs=0.15,0.1,0.075,0.05] [--steps=N] [--out=DIR]
    python -m cifar_jax analyze batchnorm --plot --out=DIR [--smooth=N]   # redraw only

Each config is trained from the same initialization and the same batches once per
learning rate (the config's optimizer and schedule, with the peak learning rate
replaced). At every step with weights ``w``, batch gradient ``g`` and the run's (peak)
learning rate ``lr``, the gradient is also taken at the probe point ``w' = w - lr * g``,
on the same batch (and dropout mask), in training mode:

* loss landscape: the training loss ``L(w)``; plotted as the min-max band over the
  learning rates at each step;
* gradient predictiveness: ``||g(w) - g(w')||``, how much the gradient changes along
  the step (small = the gradient predicts the next one well); min-max band;
* beta smoothness: ``max over learning rates of ||g(w) - g(w')|| / ||w - w'||``, the
  effective local Lipschitz constant of the gradient along the step.

Each run's numbers go to ``DIR/<model>.npz`` and ``DIR/<model>.json``; the figure
``DIR/batchnorm.png`` is drawn from every run saved in ``DIR`` (with BN red, without
green, as in the report), so the two configs can also be run one at a time (``--config``
only) into the same ``--out``. The budget comes from the config (``num_train_steps`` or
``num_epochs``) unless ``--steps`` is given; the model size from its config fields
(``--config.widths=...``, ``--compare_config.widths=...``).
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cifar_jax import parallel, runs
from cifar_jax import steps as steps_lib
from cifar_jax.errors import CifarJaxError, ConfigError

DEFAULT_LRS = (0.15, 0.1, 0.075, 0.05)


# ------------------------------------------------------------------ landscape


def random_direction(params: Any, key: Any) -> Any:
    """A filter-normalized Gaussian direction in parameter space (zero on biases / BN).

    Leaves with 2+ dimensions are kernels whose last axis indexes the filters (flax's
    HWIO conv and (in, out) dense layouts); each filter of the direction gets the norm of
    the same filter of ``params``. Leaves with fewer dimensions get zeros.
    """
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree.flatten(params)
    out = []
    for i, w in enumerate(leaves):
        if w.ndim < 2:
            out.append(jnp.zeros_like(w))
            continue
        d = jax.random.normal(jax.random.fold_in(key, i), w.shape, w.dtype)
        axes = tuple(range(w.ndim - 1))
        w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
        d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
        out.append(d * w_norm / jnp.maximum(d_norm, 1e-12))
    return jax.tree.unflatten(treedef, out)


def _subset(split: Any, num_images: int, seed: int) -> Any:
    n = len(split)
    if num_images <= 0 or num_images >= n:
        return split
    idx = np.sort(np.random.default_rng([seed, n]).choice(n, size=num_images, replace=False))
    return split.take(idx)


def landscape(
    run: runs.LoadedRun,
    num_images: int = 500,
    split: str = "test",
    points_1d: int = 41,
    points_2d: int = 21,
    span: float = 1.0,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Loss and accuracy along one and over two random filter-normalized directions."""
    import jax
    import jax.numpy as jnp

    from cifar_jax import evaluation

    if points_1d < 2 or points_2d < 2:
        raise ConfigError("--points_1d and --points_2d must be >= 2.")
    if span <= 0:
        raise ConfigError(f"--span={span} must be > 0.")
    images = _subset(evaluation.get_split(run, split), num_images, seed)
    batch_size = runs.small_batch_size(run, len(images))
    batches = list(steps_lib.eval_batches(images, batch_size, run.batch_sharding()))  # reused
    replicated = run.replicated()
    key = jax.random.key(seed)
    d1 = jax.jit(random_direction, out_shardings=replicated)(
        run.state.params, jax.random.fold_in(key, 1)
    )
    d2 = jax.jit(random_direction, out_shardings=replicated)(
        run.state.params, jax.random.fold_in(key, 2)
    )

    @jax.jit
    def move(params, d1, d2, a, b):
        return jax.tree.map(lambda w, x, y: w + a * x + b * y, params, d1, d2)

    def at(a: float, b: float) -> tuple[float, float]:
        """Loss and accuracy of the weights moved by ``a d1 + b d2`` (the run's eval step)."""
        moved = run.state.replace(
            params=move(run.state.params, d1, d2, jnp.float32(a), jnp.float32(b))
        )
        result = steps_lib.evaluate(run.eval_step, moved, batches)
        return result["loss"], result["accuracy"]

    start = time.perf_counter()
    alphas = np.linspace(-span, span, points_1d)
    line = np.array([at(a, 0.0) for a in alphas])
    log(f"1-D landscape: {points_1d} points in {time.perf_counter() - start:.1f} s")
    grid = np.linspace(-span, span, points_2d)
    surface = np.zeros((points_2d, points_2d, 2))
    for i, b in enumerate(grid):
        for j, a in enumerate(grid):
            surface[i, j] = at(a, b)
    log(f"2-D landscape: {points_2d}x{points_2d} points in {time.perf_counter() - start:.1f} s")
    center = at(0.0, 0.0)
    return {
        "alphas": alphas,
        "loss_1d": line[:, 0],
        "accuracy_1d": line[:, 1],
        "grid": grid,
        "loss_2d": surface[..., 0],  # [i, j] = (b = grid[i], a = grid[j])
        "accuracy_2d": surface[..., 1],
        "info": {
            "workdir": run.workdir,
            "checkpoint": run.checkpoint,
            "step": run.step,
            "model": run.config.model,
            "split": split,
            "num_images": len(images),
            "seed": seed,
            "span": span,
            "points_1d": points_1d,
            "points_2d": points_2d,
            "center_loss": center[0],
            "center_accuracy": center[1],
            "directions": "filter-normalized Gaussian (Li et al. 2018); biases and "
            "BatchNorm parameters not perturbed; BatchNorm running statistics",
        },
    }


def plot_landscape(result: dict[str, Any], out_dir: str) -> list[str]:
    from cifar_jax import plots

    plt = plots.plt
    info = result["info"]
    name = os.path.basename(info["workdir"].rstrip(os.sep))
    subtitle = (
        f"{name} step {info['step']}, {info['num_images']} {info['split']} images, "
        f"filter-normalized random directions (seed {info['seed']})"
    )
    paths = []
    fig, ax = plt.subplots(figsize=(8, 4.8))
    ax.plot(result["alphas"], result["loss_1d"], color="tab:blue", label="loss")
    ax.set_xlabel("alpha (step along direction d1)")
    ax.set_ylabel("loss", color="tab:blue")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(result["alphas"], 100 * result["accuracy_1d"], color="tab:orange", label="accuracy")
    ax2.set_ylabel("accuracy (%)", color="tab:orange")
    ax2.set_ylim(0, 100)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper center")
    ax.set_title(f"1-D loss landscape\n{subtitle}", fontsize=10)
    paths.append(plots._save(fig, os.path.join(out_dir, "landscape_1d.png")))

    grid, loss = result["grid"], result["loss_2d"]
    a, b = np.meshgrid(grid, grid)
    # Losses far from the minimum dwarf the basin; cap the colour scale so it stays visible.
    finite = loss[np.isfinite(loss)]
    vmax = float(min(finite.max(), np.percentile(finite, 90))) if finite.size else 1.0
    vmin = float(finite.min()) if finite.size else 0.0
    shown = np.clip(np.nan_to_num(loss, nan=vmax, posinf=vmax), None, vmax)
    fig = plt.figure(figsize=(14, 6))
    ax = fig.add_subplot(1, 2, 1)
    levels = np.linspace(vmin, vmax, 25)
    filled = ax.contourf(a, b, shown, levels=levels, cmap="viridis")
    ax.contour(a, b, shown, levels=levels[::3], colors="white", linewidths=0.5)
    ax.plot([0], [0], "r*", markersize=12, label="trained weights")
    fig.colorbar(filled, ax=ax, label=f"loss (capped at {vmax:.2f})")
    ax.set_xlabel("alpha (direction d1)")
    ax.set_ylabel("beta (direction d2)")
    ax.set_title("contours")
    ax.legend(loc="upper right")
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    ax3.plot_surface(a, b, shown, cmap="viridis", linewidth=0, antialiased=True)
    ax3.set_xlabel("alpha (d1)")
    ax3.set_ylabel("beta (d2)")
    ax3.set_zlabel("loss", labelpad=8)
    ax3.set_title("surface")
    fig.suptitle(f"2-D loss landscape\n{subtitle}", fontsize=11)
    paths.append(plots._save(fig, os.path.join(out_dir, "landscape_2d.png")))
    return paths


def save_landscape(result: dict[str, Any], out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    arrays = {k: v for k, v in result.items() if k != "info"}
    np.savez(os.path.join(out_dir, "landscape.npz"), **arrays)
    summary = dict(result["info"])
    summary["min_loss_1d"] = float(np.nanmin(result["loss_1d"]))
    summary["max_loss_1d"] = float(np.nanmax(result["loss_1d"]))
    summary["min_loss_2d"] = float(np.nanmin(result["loss_2d"]))
    summary["max_loss_2d"] = float(np.nanmax(result["loss_2d"]))
    with open(os.path.join(out_dir, "landscape.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return [os.path.join(out_dir, "landscape.npz"), os.path.join(out_dir, "landscape.json")]


# ------------------------------------------------------------------ batchnorm


def bn_sweep(
    config: Any,
    lrs: Sequence[float] = DEFAULT_LRS,
    steps: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Trains ``config`` once per peak learning rate, recording the per-step quantities.

    Returns arrays of shape (len(lrs), steps): ``loss``, ``grad_distance`` (gradient
    predictiveness, ``||g(w) - g(w - lr g)||``), ``beta`` (that over ``||lr g||``) and
    ``lr`` (the scheduled learning rate the optimizer used at each step), plus a
    description of the run. A run whose loss becomes non-finite stops there (NaN after).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from cifar_jax import experiment

    lrs = [float(x) for x in lrs]
    if not lrs or any(x <= 0 for x in lrs):
        raise ConfigError(f"--lrs={lrs} must be one or more learning rates > 0.")
    if steps < 0:
        raise ConfigError("--steps (or num_train_steps / num_epochs) must be > 0.")
    # The run's own set-up and train step, with the peak learning rate held in the
    # optimizer state: one compiled step serves every learning rate.
    exp = experiment.build(config, total_steps=steps or None, learning_rate_in_state=True)
    total, shape = exp.total_steps, exp.schedule
    has_bn = bool(jax.tree.leaves(exp.state.batch_stats))
    # The train step's own objective (loss, mixup / cutmix), at the step's dropout key.
    objective = steps_lib.config_objective(config, exp.model, exp.mean, exp.std)

    def measure(state, batch):
        """Loss, ||g(w) - g(w')|| with w' = w - peak g, beta, and the scheduled lr."""
        images, lam, dropout_key = objective.inputs(state, batch)

        def loss_at(params):
            return objective(params, state, images, batch["label"], lam, dropout_key)[0]

        loss, grads = jax.value_and_grad(loss_at)(state.params)
        peak = state.opt_state.hyperparams["learning_rate"]
        # The probe steps by the run's (peak) learning rate, not the scheduled one: a
        # decayed step would make ||w - w'|| vanish into float32 rounding late in the run.
        probe = jax.tree.map(lambda w, g: w - peak * g, state.params, grads)
        distance = optax.tree.norm(jax.tree.map(jnp.subtract, grads, jax.grad(loss_at)(probe)))
        moved = peak * optax.tree.norm(grads)
        beta = jnp.where(moved > 0, distance / jnp.where(moved > 0, moved, 1.0), jnp.nan)
        return jnp.stack([loss, distance, beta, peak * shape(state.step)])

    measure = jax.jit(
        parallel.traced_on(exp.mesh, measure),
        in_shardings=(exp.replicated, exp.batch_sharding),
        out_shardings=exp.replicated,
    )
    trainable_params = exp.trainable_params()
    record = np.full((len(lrs), total, 4), np.nan)
    diverged: dict[str, int] = {}
    every = max(1, total // 5)
    for i, lr in enumerate(lrs):
        hyper = dict(exp.state.opt_state.hyperparams)
        hyper["learning_rate"] = jax.device_put(jnp.asarray(lr, jnp.float32), exp.replicated)
        state = jax.tree.map(jnp.copy, exp.state)  # the train step donates its state
        state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
        batches = exp.train_iterator()
        start = time.perf_counter()
        for t in range(total):
            batch = exp.to_global(next(batches))
            values = measure(state, batch)  # before the step, which donates ``state``
            state, _ = exp.train_step(state, batch)
            record[i, t] = np.asarray(values.addressable_data(0))
            if not np.isfinite(record[i, t, 0]):
                diverged[str(lr)] = t + 1
                record[i, t:, :3] = np.nan
                log(f"  {config.model} lr={lr:g}: loss became non-finite at step {t + 1}; stopped")
                break
            if (t + 1) % every == 0 or t + 1 == total:
                log(
                    f"  {config.model} lr={lr:g}: step {t + 1}/{total} | loss "
                    f"{record[i, t, 0]:.4f} | grad change {record[i, t, 1]:.4f} | beta "
                    f"{record[i, t, 2]:.3g} | {time.perf_counter() - start:.1f} s"
                )
    return {
        "loss": record[..., 0],
        "grad_distance": record[..., 1],
        "beta": record[..., 2],
        "lr": record[..., 3],
        "lrs": np.asarray(lrs),
        "info": {
            "model": config.model,
            "batch_norm": has_bn,
            "label": f"{config.model} ({'with' if has_bn else 'without'} BatchNorm)",
            "lrs": lrs,
            "steps": total,
            "batch_size": int(config.batch_size),
            "optimizer": config.optimizer,
            "schedule": config.schedule,
            "trainable_params": trainable_params,
            "dataset_source": exp.dataset.source,
            "diverged_at_step": diverged,
            "config": config.to_dict(),
        },
    }


def save_sweep(result: dict[str, Any], out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    name = result["info"]["model"]
    arrays = {k: v for k, v in result.items() if k != "info"}
    np.savez(os.path.join(out_dir, f"{name}.npz"), **arrays)
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(result["info"], f, indent=2, default=str)
    return os.path.join(out_dir, f"{name}.npz")


def load_sweeps(out_dir: str) -> list[dict[str, Any]]:
    """Every run saved by :func:`save_sweep` in ``out_dir``, BN runs first."""
    found = []
    for path in sorted(glob.glob(os.path.join(out_dir, "*.npz"))):
        meta = path[: -len(".npz")] + ".json"
        if not os.path.exists(meta):
            continue
        with np.load(path) as arrays, open(meta, encoding="utf-8") as f:
            result = {k: arrays[k] for k in arrays.files}
            result["info"] = json.load(f)
        if "beta" in result:
            found.append(result)
    if not found:
        raise CifarJaxError(
            f"no BatchNorm-study data in {out_dir}; run `python -m cifar_jax analyze batchnorm "
            f"--config=configs/vgg_a_bn.py --compare_config=configs/vgg_a.py --out={out_dir}` "
            "first."
        )
    return sorted(found, key=lambda r: not r["info"]["batch_norm"])


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step min and max over learning rates, ignoring diverged (NaN) runs."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps stay NaN
        return np.nanmin(values, axis=0), np.nanmax(values, axis=0)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (shorter at the start), NaNs ignored."""
    if window <= 1:
        return values
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    sums[window:] = sums[window:] - sums[:-window]
    counts[window:] = counts[window:] - counts[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def plot_sweeps(sweeps: Sequence[dict[str, Any]], out_dir: str, smooth: int = 0) -> str:
    """Loss band, gradient predictiveness band and beta smoothness of every saved run.

    ``smooth``: moving-average window in steps applied to the plotted curves (the saved
    data stay per step); 0 = about 1/100 of the run.
    """
    import warnings

    from cifar_jax import plots

    plt = plots.plt
    if smooth <= 0:
        smooth = max(1, max(s["loss"].shape[1] for s in sweeps) // 100)
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
    others = iter(["tab:blue", "tab:purple", "tab:orange", "tab:brown"])
    for sweep in sweeps:
        info = sweep["info"]
        color = "tab:red" if info["batch_norm"] else "tab:green"
        if any(s is not sweep and s["info"]["batch_norm"] == info["batch_norm"] for s in sweeps):
            color = next(others, "gray")
        steps = np.arange(1, sweep["loss"].shape[1] + 1)
        label = info["label"]
        for ax, key in ((axes[0], "loss"), (axes[1], "grad_distance")):
            low, high = (moving_average(x, smooth) for x in _band(sweep[key]))
            ax.fill_between(steps, low, high, color=color, alpha=0.35, linewidth=0)
            ax.plot(steps, low, color=color, linewidth=0.8, label=f"{label}: min-max over lrs")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            beta = moving_average(np.nanmax(sweep["beta"], axis=0), smooth)
        axes[2].plot(steps, beta, color=color, linewidth=0.9, label=f"{label}: max over lrs")
    lrs = ", ".join(f"{x:g}" for x in sweeps[0]["info"]["lrs"])
    titles = (
        ("Loss landscape", "training loss"),
        ("Gradient predictiveness", "||g(w) - g(w - lr g)||"),
        ("Beta smoothness", "max ||g(w) - g(w')|| / ||w - w'||"),
    )
    for ax, (title, ylabel) in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    note = f"; curves averaged over {smooth} steps" if smooth > 1 else ""
    fig.suptitle(f"BatchNorm study: learning rates {{{lrs}}}, same init and batches per run{note}")
    fig.tight_layout()
    return plots._save(fig, os.path.join(out_dir, "batchnorm.png"))
