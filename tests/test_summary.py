"""The summary command and the 16 configs it summarises."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_configs import RECIPE_CONFIGS

from cifar_jax import config as config_lib
from cifar_jax.errors import ConfigError
from cifar_jax.model_summary import num_classes_for, summarize, trainable_param_count

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.py"))

# REPRODUCTION.md's counts, at each config's own data set / class count.
EXPECTED = {
    "lenet": 62_006,
    "basenet_residual": 109_030,
    "deepnet": 18_617_482,
    "cnn_baseline": 769_162,
    "resnet_small": 1_266_986,
    "resnet": 3_195_306,
    "vgg_a": 9_750_922,
    "vgg_a_bn": 9_756_426,
    "cnn_bn_dropout": 1_278_218,
    "c100_baseline": 546_388,
    "c100_bn": 546_836,
    "c100_bn_64_128": 1_127_572,
    "c100_advanced": 3_382_868,
    "c100_resnet": 4_330_324,
    "resnet_5m": 4_662_098,
    # Not a report model: airbench94.py's make_net() (docs/fast.md).
    "airbench94": 1_972_792,
    "airbench94_muon": 1_972_792,
    "fast94": 1_972_792,  # airbench94_muon's net, as the fastest recipe (docs/fast.md)
}


def load_config(path: Path):
    spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def run_summary(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "cifar_jax", "summary", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ----------------------------------------------------------------- configs
def test_one_config_per_model():
    assert sorted(p.stem for p in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_uses_only_base_fields_and_matches_reproduction_count(path):
    config = load_config(path)
    base = config_lib.base_config()
    assert set(config.keys()) == set(base.keys()), "configs may only set base_config fields"
    for key in config.keys():
        assert type(config[key]) is type(base[key]), f"{key} changed type"
    assert config.model == RECIPE_CONFIGS.get(path.stem, path.stem)
    assert trainable_param_count(config) == EXPECTED[path.stem]


def test_lenet_and_resnet_recipes():
    lenet = load_config(REPO / "configs" / "lenet.py")
    assert (lenet.optimizer, lenet.learning_rate, lenet.schedule) == ("adam", 1e-3, "cosine")
    assert (lenet.batch_size, lenet.num_epochs, lenet.val_examples) == (1024, 100, 10_000)
    assert (lenet.random_flip, lenet.random_crop_padding, lenet.normalization) == (
        True,
        0,
        "half",
    )
    resnet = load_config(REPO / "configs" / "resnet.py")
    assert (resnet.optimizer, resnet.learning_rate, resnet.momentum) == ("sgd", 0.1, 0.9)
    assert (resnet.schedule, resnet.weight_decay, resnet.num_epochs) == ("cosine", 5e-4, 200)
    assert (resnet.activation, resnet.batch_size, resnet.random_crop_padding) == ("gelu", 128, 4)


# ----------------------------------------------------------------- summarize()
@pytest.mark.parametrize(
    ("model", "overrides", "expected"),
    [
        ("lenet", {}, "62,006"),
        ("c100_resnet", {"dataset": "cifar100", "class_subset": 20}, "4,330,324"),
        ("resnet_small", {"activation": "prelu"}, "1,266,999"),
    ],
)
def test_summarize_ends_with_trainable_params_line(model, overrides, expected):
    config = config_lib.base_config()
    config.model = model
    config.update(overrides)
    text = summarize(config)
    assert text.splitlines()[-1] == f"Trainable params: {expected}"


def test_summary_rows_add_up_to_the_total():
    config = config_lib.base_config()
    config.model = "basenet_residual"
    lines = summarize(config).splitlines()
    total = int(lines[-1].split(":")[1].replace(",", ""))
    row_params = [
        int(m.group(1).replace(",", ""))
        for line in lines
        if (m := re.search(r"\)\s+([\d,]+)$", line))
    ]
    assert sum(row_params) == total == 109_030
    assert any("stage2_block1" in line for line in lines)
    assert any(line.strip().startswith("shortcut_conv") for line in lines)
    assert "(N, 7, 7, 16)" in "\n".join(lines)  # after the block's pool


@pytest.mark.parametrize(
    ("overrides", "classes"),
    [
        ({}, 10),
        ({"dataset": "cifar100"}, 100),
        ({"dataset": "cifar100", "label_type": "coarse"}, 20),
        ({"dataset": "cifar100", "class_subset": 20}, 20),
        ({"dataset": "cifar10", "class_subset": 5}, 5),
    ],
)
def test_num_classes_for(overrides, classes):
    config = config_lib.base_config()
    config.update(overrides)
    assert num_classes_for(config) == classes


@pytest.mark.parametrize(
    "overrides",
    [{"dataset": "svhn"}, {"class_subset": 11}, {"dataset": "cifar100", "label_type": "x"}],
)
def test_num_classes_for_rejects_bad_data_fields(overrides):
    config = config_lib.base_config()
    config.update(overrides)
    with pytest.raises(ConfigError):
        num_classes_for(config)


# ----------------------------------------------------------------- command line
def test_command_line_lenet():
    result = run_summary("--config=configs/lenet.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n").splitlines()[-1] == "Trainable params: 62,006"


def test_command_line_unknown_model_is_a_clean_error():
    result = run_summary("--config=configs/lenet.py", "--config.model=resnet9000")
    assert result.returncode != 0
    assert "Unknown model 'resnet9000'" in result.stderr
    assert "lenet" in result.stderr
    assert "Traceback" not in result.stderr
