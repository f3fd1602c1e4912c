"""Plain CNNs: stages of convs (or residual blocks), each optionally pooled and dropped
out, then a flatten and an MLP head. LeNet, DeepNet, VGG and the reports' small CNNs are
all instances of :class:`ConvNet` with different stage lists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax

from cifar_jax.errors import ConfigError
from cifar_jax.models import blocks
from cifar_jax.models.layers import LayerOptions, dropout


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage: ``convs`` layers of ``width`` channels, then optional pool and dropout.

    ``padding=None`` means "same" (kernel // 2). ``residual=True`` makes the layers
    BasicBlocks (stride 1) instead of conv-BN-act. ``dropout`` is the rate after the stage
    (0 = none).
    """

    width: int
    convs: int = 1
    kernel: int = 3
    padding: int | None = None
    pool: bool = True
    dropout: float = 0.0
    residual: bool = False


def vgg_stages(spec: Sequence[int | str], kernel: int = 3) -> tuple[Stage, ...]:
    """Stages from a VGG layer list such as ``(64, 'M', 128, 'M', 256, 256, 'M')``.

    Ints are convs, ``'M'`` closes a stage with a max-pool. Every stage must have one width
    (true of all VGG configs), so a ``widths`` override can change it per stage.
    """
    stages: list[Stage] = []
    current: list[int] = []
    for item in [*spec, None]:
        if isinstance(item, int):
            current.append(item)
            continue
        if item not in ("M", None):
            raise ValueError(f"VGG spec items must be ints or 'M', got {item!r}")
        if current:
            if len(set(current)) != 1:
                raise ValueError(f"VGG stage with mixed widths {current}; split it with 'M'")
            stages.append(Stage(current[0], convs=len(current), kernel=kernel, pool=item == "M"))
        current = []
    return tuple(stages)


class ConvNet(nn.Module):
    """Stages of conv-BN-act (or BasicBlocks), flatten (NCHW order), MLP head."""

    num_classes: int
    stages: tuple[Stage, ...]
    head_widths: tuple[int, ...] = ()
    conv_batch_norm: bool = False
    conv_bias: bool = True
    block_batch_norm: bool = True
    spatial_dropout: bool = False
    head_batch_norm: bool = False
    head_bn_before_act: bool = True
    head_dropout_rate: float = 0.0
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for s, stage in enumerate(self.stages, start=1):
            for j in range(1, stage.convs + 1):
                if stage.residual:
                    x = blocks.BasicBlock(
                        stage.width,
                        batch_norm=self.block_batch_norm,
                        options=self.options,
                        name=f"stage{s}_block{j}",
                    )(x, train)
                else:
                    x = blocks.ConvBNAct(
                        stage.width,
                        kernel_size=stage.kernel,
                        padding=stage.padding,
                        use_bias=self.conv_bias,
                        batch_norm=self.conv_batch_norm,
                        options=self.options,
                        name=f"stage{s}_conv{j}",
                    )(x, train)
            if stage.pool:
                if min(x.shape[1:3]) < 2:
                    raise ConfigError(
                        f"Stage {s} would max-pool a {x.shape[1]}x{x.shape[2]} map: too many "
                        f"pooling stages ({len(self.stages)}) for a 32x32 input. Fix: use "
                        f"fewer entries in --config.widths."
                    )
                x = blocks.MaxPool2x2(
                    deterministic=self.options.deterministic_pool, name=f"stage{s}_pool"
                )(x)
            if stage.dropout > 0:
                x = dropout(stage.dropout, spatial=self.spatial_dropout, name=f"stage{s}_dropout")(
                    x, deterministic=not train
                )
        x = blocks.Flatten(name="flatten")(x)
        return blocks.MLPHead(
            self.num_classes,
            hidden=self.head_widths,
            batch_norm=self.head_batch_norm,
            bn_before_act=self.head_bn_before_act,
            dropout_rate=self.head_dropout_rate,
            options=self.options,
            name="head",
        )(x, train)
