"""Every config file loads, validates, and the shared report-003 recipe reaches its configs."""

from pathlib import Path

import pytest

from cifar_jax import config_base, recipes
from cifar_jax.commands import sweep

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_file_is_valid(path):
    config = sweep.load_config_file(str(path))
    config_base.validate_config(config)
    assert config.model == path.stem


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
