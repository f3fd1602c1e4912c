"""The CIFAR ResNet of reports 001, 003 and 004: a 3x3 stem, stages of BasicBlocks, global
average pooling, optional dropout and an MLP head (just the final fc by default).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from cifar_jax.models import blocks
from cifar_jax.models.layers import LayerOptions


class CifarResNet(nn.Module):
    """stem conv3x3(stem_width) BN act -> stages of BasicBlocks -> GAP -> [dropout] -> head.

    Stage ``i`` has ``stage_blocks[i]`` blocks of ``widths[i]`` channels; its first block
    has stride ``strides[i]``. The stem conv is bias-free when followed by BatchNorm.
    """

    num_classes: int
    stem_width: int
    widths: tuple[int, ...]
    stage_blocks: tuple[int, ...]
    strides: tuple[int, ...]
    batch_norm: bool = True
    head_widths: tuple[int, ...] = ()
    dropout_rate: float = 0.0
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not len(self.widths) == len(self.stage_blocks) == len(self.strides):
            raise ValueError(
                f"widths {self.widths}, stage_blocks {self.stage_blocks} and strides "
                f"{self.strides} must have the same length"
            )
        x = blocks.ConvBNAct(
            self.stem_width,
            kernel_size=3,
            padding=1,
            use_bias=not self.batch_norm,
            batch_norm=self.batch_norm,
            options=self.options,
            name="stem",
        )(x, train)
        for s, (width, n_blocks, stride) in enumerate(
            zip(self.widths, self.stage_blocks, self.strides, strict=True), start=1
        ):
            for b in range(1, n_blocks + 1):
                x = blocks.BasicBlock(
                    width,
                    stride=stride if b == 1 else 1,
                    batch_norm=self.batch_norm,
                    options=self.options,
                    name=f"stage{s}_block{b}",
                )(x, train)
        x = blocks.GlobalAvgPool(name="avgpool")(x)
        return blocks.MLPHead(
            self.num_classes,
            hidden=self.head_widths,
            batch_norm=self.batch_norm,
            dropout_rate=self.dropout_rate,
            input_dropout_rate=self.dropout_rate,
            options=self.options,
            name="head",
        )(x, train)
