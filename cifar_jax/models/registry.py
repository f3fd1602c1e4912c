"""Model ids -> builder + default architecture, and the config overrides on top of them.

Every id of REPRODUCTION.md is one of two general builders (:class:`ConvNet` or
:class:`CifarResNet`) with the architecture its report describes. The config's model
fields override those defaults, so the reports' ablations (widths, depth, activation,
BN on/off, dropout) are command-line overrides rather than new classes:

* ``widths`` / ``stage_blocks`` / ``head_widths`` / ``stem_width`` / ``stage_strides``:
  empty or 0 = the model's default. ``widths`` may change the number of stages: extra
  stages copy the last stage's layout (ResNets: its block count and stride 2), fewer
  stages drop the trailing ones. For plain CNNs ``stage_blocks`` is convs per stage.
* ``dropout_rate`` / ``conv_dropout_rate``: -1 = the model's default, 0 = off, else
  this rate. A conv dropout override on a model without conv dropout puts it after
  every stage.
* ``batch_norm=False`` removes BatchNorm from models that have it (convs then get
  biases where they had none); ``True`` keeps each model's own choice.
* ``activation`` and ``kernel_init`` apply to every layer.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cifar_jax.errors import ConfigError
from cifar_jax.models.airbench import AirbenchNet
from cifar_jax.models.convnet import ConvNet, Stage, vgg_stages
from cifar_jax.models.layers import LayerOptions, check_activation, check_kernel_init
from cifar_jax.models.resnet import CifarResNet


@dataclasses.dataclass(frozen=True)
class ConvNetDefaults:
    """Default architecture of a plain-CNN model id (see :class:`ConvNet`)."""

    description: str
    stages: tuple[Stage, ...]
    head_widths: tuple[int, ...]
    conv_batch_norm: bool = False
    head_batch_norm: bool = False
    head_bn_before_act: bool = True
    head_dropout_rate: float = 0.0
    # torch Dropout2d (whole channels) where the report used it, element-wise otherwise.
    spatial_dropout: bool = False


@dataclasses.dataclass(frozen=True)
class ResNetDefaults:
    """Default architecture of a ResNet model id (see :class:`CifarResNet`)."""

    description: str
    stem_width: int
    widths: tuple[int, ...]
    stage_blocks: tuple[int, ...]
    strides: tuple[int, ...]
    dropout_rate: float = 0.0
    head_widths: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class AirbenchDefaults:
    """Default architecture of airbench94's net (see :class:`AirbenchNet`)."""

    description: str
    widths: tuple[int, ...] = (64, 256, 256)
    logit_scale: float | None = 1 / 9  # None: 1 / the last width
    head_unit_std: bool = False


_VGG_A = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

# Dropout rates marked "chosen" are not given by the report; the choice is documented
# in the model's config file.
Defaults = ConvNetDefaults | ResNetDefaults | AirbenchDefaults
_MODELS: types.MappingProxyType[str, Defaults] = types.MappingProxyType(
    {
        # ---- report 000
        "lenet": ConvNetDefaults(
            "LeNet-5 style: conv5x5(6) pool, conv5x5(16) pool, fc120, fc84, fc",
            stages=(Stage(6, kernel=5, padding=0), Stage(16, kernel=5, padding=0)),
            head_widths=(120, 84),
        ),
        "basenet_residual": ConvNetDefaults(
            "lenet with conv2 replaced by a BasicBlock(6->16), fc(784->120), fc84, fc",
            stages=(Stage(6, kernel=5, padding=0), Stage(16, residual=True)),
            head_widths=(120, 84),
        ),
        "deepnet": ConvNetDefaults(
            "[conv5x5(128) BN act]x2 pool Dropout2d, [conv3x3(256) BN act]x2 pool Dropout2d, "
            "fc1024 BN, fc512 BN, fc",
            stages=(
                Stage(128, convs=2, kernel=5, dropout=0.25),
                Stage(256, convs=2, kernel=3, dropout=0.25),
            ),
            head_widths=(1024, 512),
            conv_batch_norm=True,
            head_batch_norm=True,
            head_dropout_rate=0.5,
            spatial_dropout=True,
        ),
        # ---- report 001
        "cnn_baseline": ConvNetDefaults(
            "[conv3x3 BN act pool] x3 (32,64,128), conv3x3(128) BN act, fc256 act BN, fc",
            stages=(
                Stage(32),
                Stage(64, dropout=0.25),  # rate chosen
                Stage(128),
                Stage(128, pool=False, dropout=0.25),  # rate chosen
            ),
            head_widths=(256,),
            conv_batch_norm=True,
            head_batch_norm=True,
            head_bn_before_act=False,
            head_dropout_rate=0.5,  # rate chosen
        ),
        "resnet_small": ResNetDefaults(
            "stem 32, BasicBlock stages (64,128,128) x2, strides (1,2,2), GAP, fc",
            stem_width=32,
            widths=(64, 128, 128),
            stage_blocks=(2, 2, 2),
            strides=(1, 2, 2),
        ),
        "resnet": ResNetDefaults(
            "resnet_small with widths (128,128,256), dropout before fc (report: GELU)",
            stem_width=32,
            widths=(128, 128, 256),
            stage_blocks=(2, 2, 2),
            strides=(1, 2, 2),
            dropout_rate=0.5,  # rate chosen: torch nn.Dropout's default
        ),
        "vgg_a": ConvNetDefaults(
            "VGG-A: 64 M 128 M 256 256 M 512 512 M 512 512 M, fc512, fc512, fc",
            stages=vgg_stages(_VGG_A),
            head_widths=(512, 512),
        ),
        "vgg_a_bn": ConvNetDefaults(
            "VGG-A with BatchNorm after every conv",
            stages=vgg_stages(_VGG_A),
            head_widths=(512, 512),
            conv_batch_norm=True,
        ),
        # ---- report 002
        "cnn_bn_dropout": ConvNetDefaults(
            "[conv3x3 BN act pool Dropout2d(.3)] x3 (32,64,128), fc512 BN, fc256 BN, fc",
            stages=(Stage(32, dropout=0.3), Stage(64, dropout=0.3), Stage(128, dropout=0.3)),
            head_widths=(512, 256),
            conv_batch_norm=True,
            head_batch_norm=True,
            head_dropout_rate=0.5,
            spatial_dropout=True,
        ),
        # ---- report 003
        "c100_baseline": ConvNetDefaults(
            "conv3x3(32) pool, conv3x3(64) pool, fc128, fc",
            stages=(Stage(32), Stage(64)),
            head_widths=(128,),
        ),
        "c100_bn": ConvNetDefaults(
            "c100_baseline + BN after each conv and fc128",
            stages=(Stage(32), Stage(64)),
            head_widths=(128,),
            conv_batch_norm=True,
            head_batch_norm=True,
        ),
        "c100_bn_64_128": ConvNetDefaults(
            "c100_bn with conv widths (64,128)",
            stages=(Stage(64), Stage(128)),
            head_widths=(128,),
            conv_batch_norm=True,
            head_batch_norm=True,
        ),
        "c100_advanced": ConvNetDefaults(
            "[conv3x3 BN act]x2 pool dropout per block (64,128,256), fc512 BN, fc256 BN, fc",
            stages=(
                Stage(64, convs=2, dropout=0.25),
                Stage(128, convs=2, dropout=0.25),
                Stage(256, convs=2, dropout=0.25),
            ),
            head_widths=(512, 256),
            conv_batch_norm=True,
            head_batch_norm=True,
            head_dropout_rate=0.5,
        ),
        "c100_resnet": ResNetDefaults(
            "stem 64, BasicBlock stages (64,128,256) x3, strides (1,2,2), GAP, fc",
            stem_width=64,
            widths=(64, 128, 256),
            stage_blocks=(3, 3, 3),
            strides=(1, 2, 2),
        ),
        # ---- report 004
        "resnet_5m": ResNetDefaults(
            "stem 48, BasicBlock stages (48,196,192,384) x (2,2,2,1), strides (1,2,2,2), "
            "GAP, dropout .5, fc",
            stem_width=48,
            widths=(48, 196, 192, 384),
            stage_blocks=(2, 2, 2, 1),
            strides=(1, 2, 2, 2),
            dropout_rate=0.5,
        ),
        # ---- beyond the reports: the fastest known recipe to 94% (configs/airbench94.py)
        "airbench94": AirbenchDefaults(
            "airbench94: 2x2 whitening conv stem 24, GELU, [conv3x3 pool BN GELU conv3x3 BN "
            "GELU] x3 (64,256,256), pool3, linear/9"
        ),
        # (configs/airbench94_muon.py): the same layers, logits / 256, unit-std head init
        "airbench94_muon": AirbenchDefaults(
            "airbench94_muon: airbench94's layers; linear head (init scaled to std 1) / 256",
            logit_scale=None,
            head_unit_std=True,
        ),
    }
)

MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)
_RESNET_NAMES = tuple(n for n, d in _MODELS.items() if isinstance(d, ResNetDefaults))


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a model id, else raise a ConfigError listing them."""
    if name not in _MODELS:
        raise ConfigError(
            f"Unknown model {name!r}. Allowed values: {', '.join(MODEL_NAMES)}. "
            f"Fix: set --config.model to one of them."
        )
    return name


def model_description(name: str) -> str:
    """One line saying what the model id's default architecture is."""
    return _MODELS[check_model_name(name)].description


def _positive_ints(config: Any, field: str) -> tuple[int, ...]:
    value = getattr(config, field)
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise ConfigError(
            f"config.{field}={value!r}: expected a tuple of positive integers (or () for "
            f"the model's default). Fix: e.g. --config.{field}='(64, 128, 256)'."
        )
    return items


def _rate(config: Any, field: str, default: float) -> float:
    """-1 = the model's default, 0 = off, otherwise that rate."""
    value = float(getattr(config, field))
    if value == -1.0:
        return default
    if not 0.0 <= value < 1.0:
        raise ConfigError(
            f"config.{field}={value}: a dropout rate must be in [0, 1) (0 = off, -1 = the "
            f"model's default). Fix: e.g. --config.{field}=0.5."
        )
    return value


def _resize(default: tuple[int, ...], n: int, extra: int | None = None) -> tuple[int, ...]:
    """``default`` cut or extended to ``n`` entries (extending repeats ``extra`` or the last)."""
    fill = default[-1] if extra is None else extra
    return default[:n] + (fill,) * max(0, n - len(default))


def _check_length(field: str, got: tuple[int, ...], n: int, name: str) -> None:
    if len(got) != n:
        raise ConfigError(
            f"config.{field}={got} has {len(got)} entries but model {name!r} has {n} stages "
            f"(from config.widths or the model's default). Fix: give one entry per stage or "
            f"leave --config.{field}=() for the default."
        )


def _build_convnet(
    name: str, d: ConvNetDefaults, config: Any, num_classes: int, options: LayerOptions
) -> nn.Module:
    for field, empty in (("stage_strides", ()), ("stem_width", 0)):
        if getattr(config, field) not in (empty, None, [], ()):
            raise ConfigError(
                f"config.{field} applies only to the ResNet models ({', '.join(_RESNET_NAMES)}); "
                f"{name!r} has no stem and downsamples by max-pooling. Fix: leave "
                f"--config.{field}={empty!r}."
            )
    stages = d.stages
    widths = _positive_ints(config, "widths")
    if widths:
        stages = tuple(
            dataclasses.replace(stages[min(i, len(stages) - 1)], width=w)
            for i, w in enumerate(widths)
        )
    convs = _positive_ints(config, "stage_blocks")
    if convs:
        _check_length("stage_blocks", convs, len(stages), name)
        stages = tuple(dataclasses.replace(s, convs=c) for s, c in zip(stages, convs, strict=True))
    if float(config.conv_dropout_rate) != -1.0:
        rate = _rate(config, "conv_dropout_rate", 0.0)
        has_dropout = any(s.dropout > 0 for s in stages)
        stages = tuple(
            dataclasses.replace(s, dropout=rate if (s.dropout > 0 or not has_dropout) else 0.0)
            for s in stages
        )
    use_bn = bool(config.batch_norm)
    return ConvNet(
        num_classes=num_classes,
        stages=stages,
        head_widths=_positive_ints(config, "head_widths") or d.head_widths,
        conv_batch_norm=d.conv_batch_norm and use_bn,
        block_batch_norm=use_bn,
        spatial_dropout=d.spatial_dropout,
        head_batch_norm=d.head_batch_norm and use_bn,
        head_bn_before_act=d.head_bn_before_act,
        head_dropout_rate=_rate(config, "dropout_rate", d.head_dropout_rate),
        options=options,
    )


def _build_resnet(
    name: str, d: ResNetDefaults, config: Any, num_classes: int, options: LayerOptions
) -> nn.Module:
    if float(config.conv_dropout_rate) not in (-1.0, 0.0):
        raise ConfigError(
            f"config.conv_dropout_rate applies only to the plain CNNs; {name!r} is a ResNet. "
            f"Fix: leave --config.conv_dropout_rate=-1 (use dropout_rate for dropout before "
            f"the classifier)."
        )
    widths = _positive_ints(config, "widths") or d.widths
    n = len(widths)
    stage_blocks = _positive_ints(config, "stage_blocks")
    if stage_blocks:
        _check_length("stage_blocks", stage_blocks, n, name)
    strides = _positive_ints(config, "stage_strides")
    if strides:
        _check_length("stage_strides", strides, n, name)
    stem_width = int(config.stem_width)
    if stem_width < 0:
        raise ConfigError(
            f"config.stem_width={stem_width}: expected a positive width or 0 for the "
            f"model's default. Fix: e.g. --config.stem_width=64."
        )
    return CifarResNet(
        num_classes=num_classes,
        stem_width=stem_width or d.stem_width,
        widths=widths,
        stage_blocks=stage_blocks or _resize(d.stage_blocks, n),
        strides=strides or _resize(d.strides, n, extra=2),
        batch_norm=bool(config.batch_norm),
        head_widths=_positive_ints(config, "head_widths") or d.head_widths,
        dropout_rate=_rate(config, "dropout_rate", d.dropout_rate),
        options=options,
    )


def _build_airbench(
    name: str, d: AirbenchDefaults, config: Any, num_classes: int, options: LayerOptions
) -> nn.Module:
    fixed = {
        "stage_blocks": (), "stage_strides": (), "stem_width": 0, "head_widths": (),
        "conv_dropout_rate": -1.0, "batch_norm": True,
    }  # fmt: skip
    for field, default in fixed.items():
        value = getattr(config, field)
        if (tuple(value) if isinstance(value, (list, tuple)) else value) != default:
            raise ConfigError(
                f"config.{field}={value!r} does not apply to {name!r}, whose layout is "
                f"airbench94's (only widths, activation and bn_momentum change it). Fix: "
                f"leave --config.{field}={default!r}."
            )
    if float(config.dropout_rate) not in (-1.0, 0.0):
        raise ConfigError(
            f"config.dropout_rate={config.dropout_rate} does not apply to {name!r} (no "
            "dropout). Fix: leave --config.dropout_rate=-1."
        )
    widths = _positive_ints(config, "widths") or d.widths
    _check_length("widths", widths, len(d.widths), name)
    return AirbenchNet(
        num_classes=num_classes,
        widths=widths,
        logit_scale=d.logit_scale,
        head_unit_std=d.head_unit_std,
        options=options,
    )


def build_model(config: Any, num_classes: int) -> nn.Module:
    """The flax module for ``config.model`` with the config's overrides applied.

    Raises ConfigError for an unknown model, activation or init, or an invalid override.
    """
    name = check_model_name(config.model)
    momentum = float(config.bn_momentum)
    if not 0.0 <= momentum < 1.0 or math.isnan(momentum):
        raise ConfigError(
            f"config.bn_momentum={momentum}: must be in [0, 1) (flax convention: 0.9 == "
            f"torch momentum 0.1). Fix: e.g. --config.bn_momentum=0.9."
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r}: must be a positive integer.")
    options = LayerOptions(
        activation=check_activation(config.activation),
        kernel_init=check_kernel_init(config.kernel_init),
        bn_momentum=momentum,
        deterministic_pool=bool(config.get("deterministic", False)),
        # half_precision: bf16 activations and convs, float32 params / statistics / logits.
        dtype=jnp.bfloat16 if config.get("half_precision", False) else jnp.float32,
    )
    defaults = _MODELS[name]
    if isinstance(defaults, AirbenchDefaults):
        return _build_airbench(name, defaults, config, num_classes, options)
    if isinstance(defaults, ResNetDefaults):
        return _build_resnet(name, defaults, config, num_classes, options)
    return _build_convnet(name, defaults, config, num_classes, options)
