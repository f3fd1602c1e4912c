"""PyTorch eager twins of the package's flax models, for :mod:`cifar_jax.perf.bench`.

The torch model is built from the *flax module* that :func:`cifar_jax.models.build_model`
returns for a config (its dataclass fields: stages, widths, head, BN, dropout,
activation), so it has the same layers, widths and parameter count by construction
(:func:`build_torch_model` checks the count against the flax one). Only the benchmark
imports this module; ``torch`` is the ``[bench]`` extra.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from cifar_jax.models.airbench import WHITEN_KERNEL, WHITEN_WIDTH, AirbenchNet
from cifar_jax.models.convnet import ConvNet
from cifar_jax.models.resnet import CifarResNet


def _activation(kind: str) -> nn.Module:
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
        "gelu": lambda: nn.GELU(),
        "silu": lambda: nn.SiLU(inplace=True),
        "mish": lambda: nn.Mish(inplace=True),
        "prelu": lambda: nn.PReLU(),
    }[kind]()


def _bn2d(c: int) -> nn.Module:
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k, stride, pad, bias, bn, act):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, bias=bias)]
        if bn:
            layers.append(_bn2d(cout))
        layers.append(_activation(act))
        super().__init__(*layers)


class BasicBlock(nn.Module):
    """Same layout as :class:`cifar_jax.models.blocks.BasicBlock`."""

    def __init__(self, cin: int, cout: int, stride: int, bn: bool, act: str):
        super().__init__()
        bias = not bn
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)
        self.bn1 = _bn2d(cout) if bn else nn.Identity()
        self.act1 = _activation(act)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.bn2 = _bn2d(cout) if bn else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, 0, bias=bias),
                _bn2d(cout) if bn else nn.Identity(),
            )
        self.act2 = _activation(act)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _head(
    in_features: int,
    num_classes: int,
    hidden: tuple[int, ...],
    bn: bool,
    bn_before_act: bool,
    dropout: float,
    input_dropout: float,
    act: str,
) -> nn.Sequential:
    """Same layout as :class:`cifar_jax.models.blocks.MLPHead`."""
    layers: list[nn.Module] = []
    if input_dropout > 0:
        layers.append(nn.Dropout(input_dropout))
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if bn:
            pair = [nn.BatchNorm1d(h, eps=1e-5, momentum=0.1), _activation(act)]
            layers.extend(pair if bn_before_act else pair[::-1])
        else:
            layers.append(_activation(act))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _convnet(m: ConvNet) -> nn.Module:
    act = m.options.activation
    layers: list[nn.Module] = []
    c, size = 3, 32
    for stage in m.stages:
        for _ in range(stage.convs):
            if stage.residual:
                layers.append(BasicBlock(c, stage.width, 1, m.block_batch_norm, act))
            else:
                pad = stage.kernel // 2 if stage.padding is None else stage.padding
                layers.append(
                    ConvBNAct(
                        c, stage.width, stage.kernel, 1, pad, m.conv_bias, m.conv_batch_norm, act
                    )
                )
                size = size + 2 * pad - stage.kernel + 1
            c = stage.width
        if stage.pool:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        if stage.dropout > 0:
            layers.append((nn.Dropout2d if m.spatial_dropout else nn.Dropout)(stage.dropout))
    layers.append(nn.Flatten())
    layers.append(
        _head(
            c * size * size,
            m.num_classes,
            m.head_widths,
            m.head_batch_norm,
            m.head_bn_before_act,
            m.head_dropout_rate,
            0.0,
            act,
        )
    )
    return nn.Sequential(*layers)


def _resnet(m: CifarResNet) -> nn.Module:
    act = m.options.activation
    layers: list[nn.Module] = [
        ConvBNAct(3, m.stem_width, 3, 1, 1, not m.batch_norm, m.batch_norm, act)
    ]
    c = m.stem_width
    for width, blocks, stride in zip(m.widths, m.stage_blocks, m.strides, strict=True):
        for b in range(blocks):
            layers.append(BasicBlock(c, width, stride if b == 0 else 1, m.batch_norm, act))
            c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers.append(
        _head(
            c,
            m.num_classes,
            m.head_widths,
            m.batch_norm,
            True,
            m.dropout_rate,
            m.dropout_rate,
            act,
        )
    )
    return nn.Sequential(*layers)


class _Scale(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


def _airbench(m: AirbenchNet) -> nn.Module:
    """airbench94.py's make_net(): frozen whitening kernel and BN scales (no gradients)."""
    act = m.options.activation

    def bn(c: int) -> nn.Module:
        norm = nn.BatchNorm2d(c, eps=m.bn_epsilon, momentum=1 - m.options.bn_momentum)
        norm.weight.requires_grad = False
        return norm

    whiten = nn.Conv2d(3, WHITEN_WIDTH, WHITEN_KERNEL, padding=0, bias=True)
    whiten.weight.requires_grad = False
    layers: list[nn.Module] = [whiten, _activation(act)]
    c = WHITEN_WIDTH
    for w in m.widths:
        layers += [
            nn.Conv2d(c, w, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            bn(w),
            _activation(act),
            nn.Conv2d(w, w, 3, padding=1, bias=False),
            bn(w),
            _activation(act),
        ]
        c = w
    layers += [
        nn.MaxPool2d(3),
        nn.Flatten(),
        nn.Linear(c, m.num_classes, bias=False),
        _Scale(m.logit_scale),
    ]
    return nn.Sequential(*layers)


def count_params(model: nn.Module) -> int:
    """Every parameter, frozen ones included (the flax count has them too)."""
    return sum(p.numel() for p in model.parameters())


def build_torch_model(flax_model: Any, expected_params: int | None = None) -> nn.Module:
    """The torch twin of ``flax_model`` (channels_last); checks its parameter count."""
    if isinstance(flax_model, ConvNet):
        model = _convnet(flax_model)
    elif isinstance(flax_model, CifarResNet):
        model = _resnet(flax_model)
    elif isinstance(flax_model, AirbenchNet):
        model = _airbench(flax_model)
    else:
        raise TypeError(f"no torch twin for {type(flax_model).__name__}")
    if expected_params is not None and count_params(model) != expected_params:
        raise AssertionError(
            f"torch twin has {count_params(model):,} params, flax model {expected_params:,}"
        )
    return model.to(memory_format=torch.channels_last)


def build_optimizer(config: Any, model: nn.Module) -> torch.optim.Optimizer:
    """The config's optimizer at its peak learning rate (torch semantics, as cifar_jax.optim)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.learning_rate,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(
        params,
        lr=config.learning_rate,
        betas=(config.adam_b1, config.adam_b2),
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )


class TorchRunner:
    """A torch train step (uint8 batch -> normalize -> fwd/bwd/update) and an eval step.

    ``device``: "cpu" (default) or "cuda" (the batch is copied from host memory each step,
    as the jax side's ``to_global`` does; cuDNN picks its algorithms per shape, as XLA's
    autotuning does). ``config.half_precision`` runs the forward pass and loss under
    ``torch.autocast`` in bfloat16 (float32 weights and optimizer, as the jax side)."""

    def __init__(
        self,
        config: Any,
        flax_model: Any,
        expected_params: int,
        mean,
        std,
        threads=0,
        device: str = "cpu",
    ):
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(config.seed)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = build_torch_model(flax_model, expected_params).to(self.device)
        self.num_params = count_params(self.model)
        self.optimizer = build_optimizer(config, self.model)
        self.loss = nn.CrossEntropyLoss(
            label_smoothing=config.label_smoothing,
            reduction=config.get("loss_reduction", "mean"),
        )
        self.half = bool(config.get("half_precision", False))
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.half)

    def to_input(self, images_uint8):
        """NHWC uint8 numpy -> normalized float32 NCHW view in channels_last memory."""
        x = torch.from_numpy(images_uint8).to(self.device)
        x = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory
        return (x.float().div_(255.0) - self.mean) / self.std

    def to_labels(self, labels):
        return torch.from_numpy(labels).to(self.device).long()

    def train_step(self, batch: dict) -> float:
        self.model.train()
        x = self.to_input(batch["image"]).contiguous(memory_format=torch.channels_last)
        y = self.to_labels(batch["label"])
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.loss(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def eval_step(self, batch: dict):
        self.model.eval()
        x = self.to_input(batch["image"]).contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = self.model(x)
        return (logits.argmax(1) == self.to_labels(batch["label"])).sum()

    def time_steps(self, fn, batches: list[dict], n: int) -> float:
        """Seconds for ``n`` calls of ``fn`` (eager on the CPU; on a GPU the last result's
        ``float`` waits for the queued work)."""
        start = time.perf_counter()
        for i in range(n):
            out = fn(batches[i % len(batches)])
        float(out)
        return time.perf_counter() - start
