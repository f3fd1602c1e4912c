"""Every config file loads, validates, and the shared report-003 recipe reaches its configs."""

from pathlib import Path

import pytest

from cifar_jax import config as config_lib
from cifar_jax import recipes, validation
from cifar_jax.errors import ConfigError
from cifar_jax.studies import sweep

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


# Config files named for a recipe, not for the model they train.
RECIPE_CONFIGS = {"fast94": "airbench94_muon"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_file_is_valid(path):
    config = sweep.load_config_file(str(path))
    validation.validate_config(config)
    assert config.model == RECIPE_CONFIGS.get(path.stem, path.stem)


def test_fast94_is_the_recipe_its_records_ran():
    """configs/fast94.py is what docs/fast.md says it is: airbench94_muon with the epochs
    and precision of the ``muon_bf16_10ep*`` runs, every field of those runs' recorded
    config equal but the seed, the data folder and the fallback (which decides the
    precision where bf16 would be slow, and is in no record older than itself). Bug
    caught: a recipe edited in one place (the config or the docs' records) and not the
    other, so the headline numbers stop being the headline command's."""
    import json

    fast = sweep.load_config_file("configs/fast94.py").to_dict()
    muon = sweep.load_config_file("configs/airbench94_muon.py").to_dict()
    changed = {k for k in fast if fast[k] != muon[k]}
    assert changed == {"num_epochs", "num_train_steps", "half_precision",
                       "cpu_bf16_kernel_grads", "half_precision_fallback"}  # fmt: skip
    root = Path(__file__).resolve().parents[1] / "docs" / "fast" / "runs"
    records = sorted(root.glob("muon_bf16_10ep*/seed_*/results.json"))
    assert records
    for path in records:
        ran = json.loads(path.read_text())["config"]
        differ = {
            k for k in ran if k in fast and k not in ("seed", "data_dir") and ran[k] != fast[k]
        }
        # JSON has no tuples: compare lists as lists.
        differ = {k for k in differ if not (isinstance(ran[k], list) and list(fast[k]) == ran[k])}
        assert not differ, (path, {k: (ran[k], fast[k]) for k in differ})


def test_report003_recipe_is_shared_by_its_adam_configs():
    recipe = recipes.report003_adam()
    assert (recipe.class_subset, recipe.val_examples, recipe.batch_size) == (20, 2000, 32)
    assert (recipe.schedule, recipe.early_stopping_patience) == ("plateau", 10)
    for name in ("c100_baseline", "c100_bn", "c100_bn_64_128", "c100_advanced"):
        config = sweep.load_config_file(f"configs/{name}.py")
        for field in ("optimizer", "learning_rate", "schedule", "plateau_factor", "seed"):
            assert config[field] == recipe[field], (name, field)


def test_vgg_pair_differs_only_in_batch_norm():
    plain = sweep.load_config_file("configs/vgg_a.py").to_dict()
    with_bn = sweep.load_config_file("configs/vgg_a_bn.py").to_dict()
    differ = {k for k in plain if plain[k] != with_bn[k]}
    assert differ == {"model", "batch_norm"}
    assert recipes.report001_vgg_bn_study().num_epochs == 25


def test_choices_are_the_owning_modules_tuples():
    """Each enumerated field's allowed values are the tuple its own module dispatches on
    (the same object, not a copy), so adding an option there is enough."""
    from cifar_jax import losses, models, optim, steps, tracking, tta
    from cifar_jax.data import augment, pipeline, sources

    choices = validation.choices()
    owners = {
        "dataset": sources.DATASETS,
        "normalization": pipeline.NORMALIZATIONS,
        "flip_mode": augment.FLIP_MODES,
        "crop_padding_mode": augment.CROP_PADDING_MODES,
        "activation": models.ACTIVATIONS,
        "kernel_init": models.KERNEL_INITS,
        "model": models.MODEL_NAMES,
        "optimizer": optim.OPTIMIZERS,
        "loss": losses.LOSSES,
        "tta": tta.TTA_MODES,
        "best_metric": tracking.BEST_METRICS,
        "test_checkpoint": tracking.TEST_CHECKPOINTS,
        "nonfinite_loss": steps.NONFINITE_LOSS,
    }
    for name, values in owners.items():
        assert choices[name] is values, name
    base = config_lib.base_config()
    for name, values in choices.items():
        assert base[name] in values, name  # every default is an allowed value


def test_config_files_import_no_jax():
    """Loading a config file (cifar_jax.config) imports no jax; validating does,
    without starting the backend, so XLA flags set afterwards still apply."""
    import os
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from cifar_jax import config as config_lib\n"
        "config = config_lib.load_config_file('configs/lenet.py')\n"
        "assert 'jax' not in sys.modules, 'config files import jax'\n"
        "from cifar_jax import validation\n"
        "validation.validate_config(config)\n"
        "assert 'jax' in sys.modules\n"
        "os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=3'\n"
        "import jax\n"
        "print(len(jax.devices('cpu')))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "3"  # the flag set after validation was honoured


def test_bad_config_stops_before_any_data_is_read(tmp_path):
    """train_and_evaluate validates first: with a data_dir that does not exist, the config
    error (not the missing data) is what the user sees."""
    from cifar_jax import train
    from cifar_jax.errors import ConfigError

    config = config_lib.base_config()
    config.data_source = "files"
    config.data_dir = str(tmp_path / "nonexistent")
    config.flip_mode = "sometimes"
    with pytest.raises(ConfigError, match="flip_mode='sometimes'"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    config.flip_mode = "random"
    config.val_examples = 50_000  # too large for CIFAR-10's 50,000 training images
    with pytest.raises(ConfigError, match="val_examples=50000 leaves no training data"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nor was the workdir made


def test_a_run_is_validated_once_and_a_changed_config_again(monkeypatch):
    """cli.prepare and train_and_evaluate both call validate_config; the checks run once
    for the same values (bug caught: the work done twice per run), and again as soon as a
    value changes (bug caught: a memo keyed on the object, so an edited config passes
    unchecked)."""
    calls = []
    real = validation._validate
    monkeypatch.setattr(validation, "_validate", lambda c: calls.append(1) or real(c))
    monkeypatch.setattr(validation, "_VALIDATED", set())
    config = sweep.load_config_file("configs/lenet.py")
    validation.validate_config(config)
    validation.validate_config(config)
    assert len(calls) == 1
    config.optimizer = "no_such_optimizer"
    with pytest.raises(ConfigError, match="no_such_optimizer"):
        validation.validate_config(config)
    assert len(calls) == 2
