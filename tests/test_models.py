"""Models: exact parameter counts, overrides, BN/dropout modes, activations, pooling, init.

Big models are only ever initialised abstractly (jax.eval_shape); forward passes use the
small ones, so the file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import erf

from cifar_jax import config as config_lib
from cifar_jax.errors import ConfigError
from cifar_jax.kernels import fast_ops
from cifar_jax.models import ACTIVATIONS, MODEL_NAMES, build_model, count_trainable_params, layers

# REPRODUCTION.md, "Models" table: (classes, trainable params).
EXPECTED = {
    "lenet": (10, 62_006),
    "basenet_residual": (10, 109_030),
    "deepnet": (10, 18_617_482),
    "cnn_baseline": (10, 769_162),
    "resnet_small": (10, 1_266_986),
    "resnet": (10, 3_195_306),
    "vgg_a": (10, 9_750_922),
    "vgg_a_bn": (10, 9_756_426),
    "cnn_bn_dropout": (10, 1_278_218),
    "c100_baseline": (20, 546_388),
    "c100_bn": (20, 546_836),
    "c100_bn_64_128": (20, 1_127_572),
    "c100_advanced": (20, 3_382_868),
    "c100_resnet": (20, 4_330_324),
    "resnet_5m": (10, 4_662_098),
    # Not a report model: airbench94.py's make_net() (tests/test_airbench.py).
    "airbench94": (10, 1_972_792),
    # airbench94_muon.py's CifarNet: the same layers (tests/test_muon.py).
    "airbench94_muon": (10, 1_972_792),
}


def make_config(model: str, **overrides):
    config = config_lib.base_config()
    config.model = model
    config.update(overrides)
    return config


def abstract_variables(model: nn.Module):
    """Shapes of all variables, without computing anything (fast for 18M params)."""

    def init(x):
        return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)

    return jax.eval_shape(init, jnp.zeros((1, 32, 32, 3), jnp.float32))


def param_count(model_name: str, num_classes: int = 10, **overrides) -> int:
    model = build_model(make_config(model_name, **overrides), num_classes)
    return count_trainable_params(abstract_variables(model)["params"])


def init(model: nn.Module, batch: int = 2, seed: int = 0):
    x = jax.random.normal(jax.random.key(seed + 100), (batch, 32, 32, 3), jnp.float32)
    keys = {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}
    return model.init(keys, x, train=False), x


def resnet_formula(stem, widths, blocks, strides, classes, bn=True):
    """Trainable params of the CIFAR ResNet, by hand (independent of the implementation)."""
    norm = 2 if bn else 0
    bias = 0 if bn else 1
    total = 27 * stem + stem * (norm + bias)
    c_in = stem
    for width, n_blocks, stride in zip(widths, blocks, strides, strict=True):
        for b in range(n_blocks):
            s = stride if b == 0 else 1
            total += 9 * c_in * width + 9 * width * width + 2 * width * (norm + bias)
            if s != 1 or c_in != width:
                total += c_in * width + width * (norm + bias)
            c_in = width
    return total + c_in * classes + classes


# ----------------------------------------------------------------- counts
def test_model_names_are_the_reproduction_ids():
    assert set(MODEL_NAMES) == set(EXPECTED)
    assert len(MODEL_NAMES) == 17


@pytest.mark.parametrize("name", list(EXPECTED))
def test_param_count_matches_reproduction(name):
    classes, expected = EXPECTED[name]
    assert param_count(name, classes) == expected


def test_batch_stats_only_in_bn_models_and_not_counted():
    no_bn = abstract_variables(build_model(make_config("lenet"), 10))
    assert set(no_bn) == {"params"}
    with_bn = abstract_variables(build_model(make_config("c100_bn"), 20))
    assert set(with_bn) == {"params", "batch_stats"}
    # count_trainable_params on the whole variables dict counts params only.
    assert count_trainable_params(with_bn) == count_trainable_params(with_bn["params"])
    assert count_trainable_params(with_bn) == EXPECTED["c100_bn"][1]


# ----------------------------------------------------------------- overrides
def test_width_override_turns_resnet_small_into_resnet():
    assert param_count("resnet_small", widths=(128, 128, 256)) == EXPECTED["resnet"][1]


def test_width_override_turns_c100_bn_into_c100_bn_64_128():
    assert param_count("c100_bn", 20, widths=(64, 128)) == EXPECTED["c100_bn_64_128"][1]


@pytest.mark.parametrize(
    ("stem", "widths"),
    [
        (32, (32, 64, 128)),
        (64, (64, 128, 256)),
        (16, (16, 32, 64, 128)),  # 4 stages: blocks/strides extend to (2,)*4 / (1,2,2,2)
        (64, (64, 64, 128, 256)),
    ],
)
def test_report_001_width_depth_ablation_counts(stem, widths):
    n = len(widths)
    expected = resnet_formula(stem, widths, (2,) * n, (1,) + (2,) * (n - 1), 10)
    assert param_count("resnet_small", stem_width=stem, widths=widths) == expected


def test_resnet_formula_matches_defaults_and_explicit_stage_overrides():
    assert (
        resnet_formula(48, (48, 196, 192, 384), (2, 2, 2, 1), (1, 2, 2, 2), 10)
        == (EXPECTED["resnet_5m"][1])
    )
    got = param_count("c100_resnet", 20, stage_blocks=(1, 1, 1), stage_strides=(1, 1, 2))
    assert got == resnet_formula(64, (64, 128, 256), (1, 1, 1), (1, 1, 2), 20)


def test_head_widths_override():
    # c100_baseline with a 256-unit hidden layer: fc(4096->256) + fc(256->20).
    convs = (27 * 32 + 32) + (9 * 32 * 64 + 64)
    expected = convs + 4096 * 256 + 256 + 256 * 20 + 20
    assert param_count("c100_baseline", 20, head_widths=(256,)) == expected


def test_extra_plain_cnn_stage_copies_last_stage_layout():
    # 003's "third convolutional layer": conv3x3(128)+pool, so the fc sees 4*4*128.
    convs = (27 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 128 + 128)
    expected = convs + 2048 * 128 + 128 + 128 * 20 + 20
    assert param_count("c100_baseline", 20, widths=(32, 64, 128)) == expected


def test_batch_norm_false_removes_bn():
    assert param_count("vgg_a_bn", batch_norm=False) == EXPECTED["vgg_a"][1]
    assert param_count("c100_bn", 20, batch_norm=False) == EXPECTED["c100_baseline"][1]
    assert param_count("resnet_small", batch_norm=False) == resnet_formula(
        32, (64, 128, 128), (2, 2, 2), (1, 2, 2), 10, bn=False
    )


@pytest.mark.parametrize(
    ("model", "overrides", "message"),
    [
        ("resnet_small", {"stage_blocks": (2, 2)}, "stage_blocks"),
        ("resnet_small", {"stage_strides": (1, 2, 2, 2)}, "stage_strides"),
        ("resnet_small", {"conv_dropout_rate": 0.2}, "conv_dropout_rate"),
        ("lenet", {"stage_strides": (1, 2)}, "stage_strides"),
        ("lenet", {"stem_width": 16}, "stem_width"),
        ("lenet", {"widths": (6, -16)}, "widths"),
        ("lenet", {"dropout_rate": 1.0}, "dropout_rate"),
        ("lenet", {"kernel_init": "xavier"}, "kernel_init"),
        ("lenet", {"bn_momentum": 1.5}, "bn_momentum"),
    ],
)
def test_invalid_overrides_raise_config_error(model, overrides, message):
    with pytest.raises(ConfigError, match=message):
        param_count(model, **overrides)


def test_too_many_pooling_stages_is_a_config_error():
    with pytest.raises(ConfigError, match="pooling"):
        param_count("vgg_a", widths=(64, 128, 256, 512, 512, 512))


def test_unknown_model_lists_the_names():
    with pytest.raises(ConfigError) as err:
        build_model(make_config("resnet50"), 10)
    message = str(err.value)
    assert "'resnet50'" in message
    assert all(name in message for name in MODEL_NAMES)


def test_unknown_activation_lists_the_names():
    with pytest.raises(ConfigError) as err:
        build_model(make_config("lenet", activation="swish"), 10)
    assert "'swish'" in str(err.value)
    assert all(name in str(err.value) for name in ACTIVATIONS)


# ----------------------------------------------------------------- forward passes
@pytest.mark.parametrize(
    ("name", "classes", "overrides"),
    [
        ("lenet", 10, {}),
        ("basenet_residual", 10, {}),
        ("c100_bn", 20, {}),
        ("cnn_bn_dropout", 10, {}),
        ("resnet_small", 10, {"stem_width": 8, "widths": (8, 16, 16)}),
    ],
)
def test_forward_output_shape(name, classes, overrides):
    model = build_model(make_config(name, **overrides), classes)
    variables, x = init(model, batch=3)
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (3, classes)
    assert logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_batchnorm_batch_stats_in_train_running_stats_in_eval():
    model = build_model(make_config("c100_bn"), 20)
    variables, x = init(model, batch=4)
    # Train: batch statistics, running stats updated.
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    changed = jax.tree_util.tree_map(
        lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], updates["batch_stats"]
    )
    assert all(jax.tree_util.tree_leaves(changed))
    # Eval: running stats, nothing updated, each example independent of the others.
    eval_logits, eval_updates = model.apply(variables, x, train=False, mutable=["batch_stats"])
    same = jax.tree_util.tree_map(
        lambda a, b: bool(jnp.all(a == b)), variables["batch_stats"], eval_updates["batch_stats"]
    )
    assert all(jax.tree_util.tree_leaves(same))
    alone = model.apply(variables, x[:1], train=False)
    np.testing.assert_allclose(alone[0], eval_logits[0], rtol=1e-5, atol=1e-5)
    train_alone, _ = model.apply(variables, x[:2], train=True, mutable=["batch_stats"])
    assert not np.allclose(train_alone[0], logits[0], atol=1e-4)


def test_dropout_only_in_train_mode():
    model = build_model(make_config("c100_baseline", dropout_rate=0.5, conv_dropout_rate=0.5), 20)
    variables, x = init(model)

    def run(train, key):
        return model.apply(variables, x, train=train, rngs={"dropout": jax.random.key(key)})

    assert not np.allclose(run(True, 1), run(True, 2))
    np.testing.assert_array_equal(run(False, 1), run(False, 2))
    np.testing.assert_array_equal(run(False, 1), model.apply(variables, x, train=False))


def test_zero_rate_turns_default_dropout_off():
    model = build_model(make_config("cnn_bn_dropout", dropout_rate=0.0, conv_dropout_rate=0.0), 10)
    variables, x = init(model)

    def run(key):
        out, _ = model.apply(
            variables,
            x,
            train=True,
            rngs={"dropout": jax.random.key(key)},
            mutable=["batch_stats"],
        )
        return out

    np.testing.assert_array_equal(run(1), run(2))


def test_spatial_dropout_drops_whole_channels():
    x = jnp.ones((4, 8, 8, 16))
    y = layers.dropout(0.5, spatial=True).apply(
        {}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}
    )
    per_channel = np.asarray(y).reshape(4, 64, 16)
    assert np.all(per_channel.min(axis=1) == per_channel.max(axis=1))  # constant per map
    assert set(np.unique(per_channel)) == {0.0, 2.0}


# ----------------------------------------------------------------- activations
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_builds_and_runs(activation):
    model = build_model(make_config("lenet", activation=activation), 10)
    variables, x = init(model)
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (2, 10)
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_activation_definitions_match_torch_defaults():
    x = jnp.linspace(-4.0, 4.0, 81)

    def act(kind):
        module = layers.Activation(kind)
        return module.apply(module.init(jax.random.key(0), x), x)

    np.testing.assert_allclose(act("relu"), jnp.maximum(x, 0.0), atol=0)
    np.testing.assert_allclose(act("silu"), x / (1 + jnp.exp(-x)), atol=1e-6)
    np.testing.assert_allclose(act("leaky_relu"), jnp.where(x >= 0, x, 0.01 * x), atol=1e-7)
    exact_gelu = 0.5 * x * (1 + erf(x / math.sqrt(2)))
    np.testing.assert_allclose(act("gelu"), exact_gelu, atol=1e-6)
    np.testing.assert_allclose(act("mish"), x * jnp.tanh(jax.nn.softplus(x)), atol=1e-6)
    np.testing.assert_allclose(act("elu"), jnp.where(x > 0, x, jnp.expm1(x)), atol=1e-6)
    np.testing.assert_allclose(act("prelu"), jnp.where(x >= 0, x, 0.25 * x), atol=1e-7)


@pytest.mark.parametrize(
    "model_name,overrides,sites",
    [
        ("lenet", {}, 4),  # 2 conv + 2 hidden fc
        ("resnet_small", {"widths": (8, 8, 8), "stem_width": 8}, 13),  # stem + 2 x 6 blocks
    ],
)
def test_config_activation_reaches_every_activation_site(model_name, overrides, sites):
    for activation in ACTIVATIONS:
        model = build_model(make_config(model_name, activation=activation, **overrides), 10)
        variables = abstract_variables(model)  # shapes only: tracing is enough
        kinds = []

        def record(next_fun, args, kwargs, context, kinds=kinds):
            if isinstance(context.module, layers.Activation):
                kinds.append(context.module.kind)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            x = jnp.zeros((1, 32, 32, 3), jnp.float32)
            jax.eval_shape(lambda v, x=x, model=model: model.apply(v, x, train=False), variables)
        assert kinds == [activation] * sites, (activation, kinds)


def test_prelu_adds_one_trainable_slope_per_activation_site():
    # lenet: 2 conv + 2 hidden fc activations; resnet_small: stem + 2 per block x 6.
    assert param_count("lenet", activation="prelu") == EXPECTED["lenet"][1] + 4
    assert param_count("resnet_small", activation="prelu") == EXPECTED["resnet_small"][1] + 13
    assert param_count("resnet_small", activation="gelu") == EXPECTED["resnet_small"][1]


# ----------------------------------------------------------------- pooling
@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (3, 16, 4, 5)])
def test_deterministic_max_pool_agrees_with_the_window_form(shape):
    """config.deterministic's pool (no select-and-scatter, on every backend) has the window
    form's values and gradients."""
    x = jax.random.normal(jax.random.key(0), shape)  # random floats: no ties
    window = fast_ops.max_pool2x2_window(x)
    pooled = layers.max_pool2x2(x, deterministic=True)
    assert window.shape == (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    np.testing.assert_array_equal(window, pooled)
    cotangent = jax.random.normal(jax.random.key(1), window.shape)

    def grad(pool):
        return jax.grad(lambda v: jnp.sum(pool(v) * cotangent))(x)

    deterministic = grad(lambda v: layers.max_pool2x2(v, deterministic=True))
    np.testing.assert_array_equal(grad(fast_ops.max_pool2x2_window), deterministic)
    hlo = jax.jit(jax.grad(lambda v: layers.max_pool2x2(v, True).sum())).lower(x).as_text()
    assert "select_and_scatter" not in hlo


def test_max_pool_floors_odd_sizes():
    x = jax.random.normal(jax.random.key(0), (1, 7, 7, 2))
    out = layers.max_pool2x2(x, deterministic=True)
    assert out.shape == (1, 3, 3, 2)  # floor, like torch's MaxPool2d(2, 2)
    np.testing.assert_array_equal(out, fast_ops.max_pool2x2_window(x))


def test_flatten_uses_torch_nchw_order():
    x = jnp.arange(2 * 2 * 3 * 4).reshape(2, 2, 3, 4)  # NHWC
    np.testing.assert_array_equal(
        layers.flatten_nchw(x), np.asarray(x).transpose(0, 3, 1, 2).reshape(2, -1)
    )


# ----------------------------------------------------------------- init
def _kernels_and_biases(params):
    """(kernel, bias or None) for every Conv/Dense layer in a params tree."""
    found = []

    def walk(node):
        if "kernel" in node:
            found.append((node["kernel"], node.get("bias")))
        for value in node.values():
            if isinstance(value, dict):
                walk(value)

    walk(params)
    return found


def test_pytorch_init_is_uniform_within_one_over_sqrt_fan_in():
    model = build_model(make_config("basenet_residual", kernel_init="pytorch"), 10)
    variables, _ = init(model)
    layers_found = _kernels_and_biases(jax.device_get(variables["params"]))
    assert len(layers_found) == 7  # conv1, block (2 convs + shortcut), 3 fc
    for kernel, bias in layers_found:
        fan_in = math.prod(kernel.shape[:-1])
        bound = 1.0 / math.sqrt(fan_in)
        assert np.abs(kernel).max() <= bound
        assert np.abs(kernel).max() > 0.8 * bound  # uniform over the whole range
        if bias is not None:
            assert np.abs(bias).max() <= bound


def test_kaiming_init_is_he_normal_fan_out_for_convs():
    config = make_config("resnet_small", kernel_init="kaiming", widths=(64, 64, 64))
    variables, _ = init(build_model(config, 10))
    kernel = np.asarray(variables["params"]["stage1_block2"]["conv1"]["kernel"])
    fan_out = 9 * kernel.shape[-1]
    np.testing.assert_allclose(kernel.std(), math.sqrt(2.0 / fan_out), rtol=0.05)
    fc = variables["params"]["head"]["fc1"]["kernel"]  # Linear keeps torch's default
    assert np.abs(fc).max() <= 1.0 / math.sqrt(fc.shape[0])
