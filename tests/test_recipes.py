"""Every seed recipe runs from its one config: the configs hold the reports' options, the
new fields are validated, early stopping tests the best checkpoint, and the CIFAR-100
path learns on real images."""

import importlib.util
import json
from pathlib import Path

import pytest
from test_train import tiny_config

from cifar_jax import checkpoint, models, train, validation
from cifar_jax import config as config_lib
from cifar_jax.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def load_config(name: str):
    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"configs.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_is_complete_and_valid(path):
    assert "NOT YET" not in path.read_text(), f"{path.name} still has an unwired option"
    config = load_config(path.stem)
    validation.validate_config(config)
    num_classes = config.class_subset or (100 if config.dataset == "cifar100" else 10)
    models.build_model(config, num_classes)


# The options each report's recipe needs (REPRODUCTION.md), as the configs set them.
RECIPES = {
    "c100_baseline": dict(
        normalization="none", schedule="plateau", plateau_metric="val_loss", plateau_factor=0.5,
        plateau_patience=5, early_stopping_patience=10, best_metric="val_loss",
        test_checkpoint="best", batch_size=32, num_epochs=50, optimizer="adam",
    ),
    "c100_bn": dict(normalization="none", schedule="plateau", early_stopping_patience=10),
    "c100_bn_64_128": dict(normalization="none", schedule="plateau", early_stopping_patience=10),
    "c100_advanced": dict(normalization="none", schedule="plateau", early_stopping_patience=10),
    "c100_resnet": dict(
        normalization="none", cutout_size=16, schedule="cosine", nesterov=True,
        label_smoothing=0.1, early_stopping_patience=10, best_metric="val_loss",
        kernel_init="kaiming", batch_size=256,
    ),
    "cnn_bn_dropout": dict(
        random_rotation=15.0, color_jitter_brightness=0.2, color_jitter_contrast=0.2,
        color_jitter_saturation=0.2, schedule="plateau", plateau_metric="val_loss",
        plateau_factor=0.5, plateau_patience=3, plateau_min_lr=1e-6, grad_clip_norm=1.0,
        early_stopping_patience=5, best_metric="val_accuracy", weight_decay=1e-4,
    ),
    "resnet_small": dict(
        autoaugment="cifar10", schedule="plateau", plateau_metric="val_accuracy",
        plateau_factor=0.5, plateau_patience=3, normalization="mean_std",
    ),
    "resnet": dict(autoaugment="cifar10", schedule="cosine", optimizer="sgd", learning_rate=0.1),
    "resnet_5m": dict(
        schedule="step", lr_step_epochs=10, lr_step_gamma=0.1, random_rotation=15.0,
        color_jitter_brightness=0.2, color_jitter_contrast=0.2, color_jitter_saturation=0.2,
        random_erasing_prob=0.5, random_erasing_scale=(0.02, 0.2), normalization="half",
        val_examples=10_000, batch_size=64, num_epochs=40,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_configs_hold_the_report_recipes(name):
    config = load_config(name)
    for field, want in RECIPES[name].items():
        got = config[field]
        assert (tuple(got) if isinstance(got, (list, tuple)) else got) == want, (name, field)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("loss", "hinge", "loss='hinge' is not known"),
        ("optimizer", "lion", "'rmsprop'"),
        ("schedule", "exponential", "'onecycle'"),
        ("normalization", "zscore", "'none'"),
        ("autoaugment", "imagenet", "'cifar10'"),
        ("plateau_metric", "loss", "'val_loss'"),
        ("best_metric", "acc", "'val_accuracy'"),
        ("test_checkpoint", "last", "'final'"),
        ("focal_gamma", -1.0, "focal_gamma=-1.0"),
        ("l2_penalty", -1e-4, "l2_penalty"),
        ("rmsprop_alpha", 1.0, "in \\[0, 1\\)"),
        ("plateau_factor", 1.0, "in \\(0, 1\\)"),
        ("lr_step_epochs", 0, "lr_step_epochs"),
        ("onecycle_pct_start", 1.5, "onecycle_pct_start"),
        ("random_rotation", 200.0, "random_rotation"),
        ("random_erasing_prob", 1.5, "random_erasing_prob"),
        ("random_erasing_scale", (0.5, 0.1), "random_erasing_scale"),
        ("random_erasing_ratio", (0.0, 3.3), "random_erasing_ratio"),
        ("cutout_size", 40, "cutout_size"),
        ("mixup_alpha", -0.2, "mixup_alpha"),
        ("color_jitter_contrast", -0.1, "color_jitter_contrast"),
        ("early_stopping_patience", -1, "early_stopping_patience"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(field, value, message):
    config = config_lib.base_config()
    config[field] = value
    with pytest.raises(ConfigError, match=message) as err:
        validation.validate_config(config)
    assert field in str(err.value) and "--config." in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [dict(schedule="plateau"), dict(early_stopping_patience=3), dict(test_checkpoint="best")],
)
def test_validation_options_need_a_validation_split(overrides):
    config = config_lib.base_config()
    config.update(overrides)
    with pytest.raises(ConfigError, match="needs a validation split"):
        validation.validate_config(config)
    config.val_examples = 5000
    validation.validate_config(config)


def test_early_stopping_tests_the_best_checkpoint(tmp_path):
    # A learning rate of 1e-9 keeps the validation accuracy where it is: the first
    # evaluation is the best, the next two do not improve on it, and patience 2 stops the
    # run after epoch 3 (6 steps per epoch) and tests the state of step 6.
    common = dict(val_examples=64, schedule="constant", learning_rate=1e-9, log_every_steps=6)
    stopped = train.train_and_evaluate(
        tiny_config(num_epochs=6, early_stopping_patience=2, **common), str(tmp_path / "es")
    )
    assert stopped["stopped_early"] and stopped["steps"] == 18 and stopped["epochs"] == 3
    assert stopped["best_step"] == 6 and stopped["tested_checkpoint"] == "best"
    assert 0 <= stopped["best_val_accuracy"] <= 1 and stopped["best_val_loss"] > 0
    assert sorted(int(p.name) for p in (tmp_path / "es" / checkpoint.BEST).iterdir()) == [6]
    assert json.loads((tmp_path / "es" / "results.json").read_text())["best_step"] == 6

    # The same run stopped by its length after epoch 1 tests its final state, the state
    # of step 6: the early-stopped run's test numbers must be exactly these. The best
    # checkpoint is saved without early stopping too.
    one_epoch = train.train_and_evaluate(tiny_config(num_epochs=1, **common), str(tmp_path / "one"))
    assert not one_epoch["stopped_early"] and one_epoch["tested_checkpoint"] == "final"
    assert one_epoch["best_step"] == 6 and (tmp_path / "one" / checkpoint.BEST / "6").is_dir()
    assert stopped["test_loss"] == one_epoch["test_loss"]
    assert stopped["test_accuracy"] == one_epoch["test_accuracy"]
    assert stopped["state_sha256"] != one_epoch["state_sha256"]  # it did train on past it


@pytest.mark.slow
def test_c100_baseline_learns_real_cifar100_mini(tmp_path, real_data_root):
    config = load_config("c100_baseline")  # 20 classes, [0, 1] pixels, plateau, best ckpt
    config.update(
        dict(
            data_dir=str(real_data_root / "cifar100-mini"), data_source="files",
            val_examples=320, num_epochs=4, batch_size=64, learning_rate=2e-3,
            eval_batch_size=400, log_every_steps=20,
        )
    )  # fmt: skip
    validation.validate_config(config)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["config"]["class_subset"] == 20 and results["tested_checkpoint"] == "best"
    # Chance is 5% on the 400 test images of the 20 classes.
    assert results["test_accuracy"] > 0.15, results["test_accuracy"]
