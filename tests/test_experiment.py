"""experiment.build: one set-up for every caller, and exactly the one training runs."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from test_train import tiny_config

from cifar_jax import config as config_lib
from cifar_jax import experiment, models, steps, train
from cifar_jax import model_summary as summary
from cifar_jax.errors import ConfigError
from cifar_jax.models import airbench

CONFIGS = {
    "resnet_small_w8": dict(model="resnet_small", widths=(8, 8, 8)),  # BatchNorm
    "lenet": dict(),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pieces_are_consistent(name):
    config = tiny_config(**CONFIGS[name])
    exp = experiment.build(config)
    # 256 synthetic images / batch 32 = 8 steps per epoch, 2 epochs.
    assert (exp.steps_per_epoch, exp.total_steps) == (8, 16)
    assert exp.num_classes == exp.dataset.num_classes == 10
    assert exp.trainable_params() == summary.trainable_param_count(config)
    assert exp.batch_sharding.spec == P("data") and exp.replicated.spec == P()
    for leaf in jax.tree.leaves(exp.state):
        assert leaf.sharding.is_equivalent_to(exp.replicated, leaf.ndim)
    has_bn = bool(jax.tree.leaves(exp.state.batch_stats))
    assert has_bn == (name == "resnet_small_w8")

    # The data-free build has the same state tree, shapes, dtypes and shardings.
    abstract = experiment.build_abstract(config, exp.num_classes, mesh=exp.mesh)
    assert jax.tree.structure(abstract.state) == jax.tree.structure(exp.state)
    for a, c in zip(jax.tree.leaves(abstract.state), jax.tree.leaves(exp.state), strict=True):
        assert (a.shape, a.dtype) == (c.shape, c.dtype)
        assert a.sharding.is_equivalent_to(c.sharding, c.ndim)

    # The eval loop sees every test image exactly once.
    result = exp.evaluate(exp.state, exp.dataset.test)
    assert set(result) == {"loss", "accuracy"} and np.isfinite(result["loss"])
    batches = list(exp.eval_batches(exp.dataset.test))
    assert sum(int(np.asarray(b["mask"]).sum()) for b in batches) == len(exp.dataset.test)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hand_loop_over_build_matches_training(name, tmp_path):
    """Training and a bare loop over build()'s train step end in the same weights, bit for
    bit: any set-up drift between the trainer and the builder breaks this."""
    config = tiny_config(**CONFIGS[name])
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    exp = experiment.build(config)
    state, batches = exp.state, exp.train_iterator()
    for _ in range(exp.total_steps):
        state, _ = exp.train_step(state, exp.to_global(next(batches)))
    assert int(state.step) == results["steps"] == 16
    assert steps.state_sha256(state) == results["state_sha256"]


def test_learning_rate_in_state_trains_like_the_schedule():
    """analyze batchnorm's optimizer (peak learning rate in the state) steps like the run's."""
    config = tiny_config()
    plain = experiment.build(config, total_steps=3)
    injected = experiment.build(config, total_steps=3, learning_rate_in_state=True)
    lr = float(injected.state.opt_state.hyperparams["learning_rate"])
    assert lr == pytest.approx(config.learning_rate)
    ends = []
    for exp in (plain, injected):
        state, batches = exp.state, exp.train_iterator()
        for _ in range(3):
            state, _ = exp.train_step(state, exp.to_global(next(batches)))
        ends.append(state.params)
    for a, b in zip(jax.tree.leaves(ends[0]), jax.tree.leaves(ends[1]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    start = jax.tree.leaves(experiment.build(config, total_steps=3).state.params)
    moved = zip(jax.tree.leaves(ends[0]), start, strict=True)
    assert any(not np.allclose(a, s) for a, s in moved)  # it did train


def test_run_length_errors():
    config = tiny_config(batch_size=512)
    with pytest.raises(ConfigError, match="larger than the training split"):
        experiment.run_length(config, 256)
    assert experiment.run_length(tiny_config(), 256, total_steps=5) == (8, 5)
    with pytest.raises(ConfigError, match="must be > 0"):
        experiment.run_length(tiny_config(num_epochs=0), 256)


def test_data_dependent_init_and_lookahead_come_from_the_config():
    """airbench94's whitening stem is initialised from the first data_init_examples
    normalized training images, and its lookahead average starts at the weights: the set-up
    training, the benchmark and analyze all get from build()."""
    config = config_lib.load_config_file("configs/airbench94.py")
    config.update(
        dict(
            widths=(8, 16, 16),
            data_source="synthetic",
            synthetic_train_examples=64,
            synthetic_test_examples=16,
            batch_size=16,
            eval_batch_size=16,
            data_init_examples=32,
        )
    )
    exp = experiment.build(config)
    images = experiment.init_images(config, exp.model, exp.dataset, exp.mean, exp.std)
    assert images.shape == (32, 32, 32, 3)
    np.testing.assert_allclose(
        exp.state.params["whiten"]["kernel"], airbench.whitening_kernel(images), rtol=1e-5
    )
    np.testing.assert_array_equal(
        exp.state.lookahead["params"]["whiten"]["kernel"], exp.state.params["whiten"]["kernel"]
    )
    lenet = models.build_model(tiny_config(), 10)  # no data-dependent initializer
    assert experiment.init_images(config, lenet, exp.dataset, exp.mean, exp.std) is None
