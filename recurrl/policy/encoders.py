"""Observation encoders, chosen from the observation space.

An encoder maps the parts of an observation — a list of ``[N, *part_shape]`` tensors in
:func:`~recurrl.policy.tree.space_leaves` order (one part for a flat space) — to features
``[N, out_features]``. Every part has its own encoder; their outputs are concatenated.

============================  ===================================================================
part                          encoder
============================  ===================================================================
``Box`` vector (any shape)    flattened -> MLP (``policy.encoder_sizes``)
``Box`` image                 ``uint8`` in [0, 255], ``HxWxC`` or ``CxHxW`` (detected): scaled to
                              [0, 1] -> CNN -> MLP; ``policy.encoder=mlp`` flattens it instead
``Discrete``                  one-hot -> MLP
``MultiDiscrete``             one-hot per part, concatenated -> MLP
``MultiBinary``               0/1 floats -> MLP
top-level ``action_mask``     not encoded: it masks the discrete action head
============================  ===================================================================
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from recurrl.policy.spaces import (
    ACTION_MASK_KEY,
    UnsupportedSpaceError,
    channel_layout,
    image_layout,
)
from recurrl.policy.tree import space_leaves

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights, constant bias (the PPO implementation-detail default)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class MLP(nn.Sequential):
    """``nn.Sequential`` of Linear + activation layers."""


def mlp(in_features: int, sizes: list[int], activation: str) -> tuple[nn.Module, int]:
    """A stack of Linear + activation layers; returns ``(module, out_features)``."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [layer_init(nn.Linear(in_features, size)), ACTIVATIONS[activation]()]
        in_features = size
    return MLP(*layers), in_features


# --- per-part preprocessing: raw part [N, ...] -> floats ----------------------------------------


class FlattenFloat(nn.Module):
    """``x[N, ...] -> ((x - offset) * scale)[N, D]`` as floats (offset/scale optional)."""

    def __init__(self, shape: tuple[int, ...], offset=None, scale=None) -> None:
        super().__init__()
        self.out_features = int(math.prod(shape))
        self.offset = None if offset is None else torch.as_tensor(offset).reshape(-1).float()
        self.scale = None if scale is None else torch.as_tensor(scale).reshape(-1).float()

    def forward(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        x = x.to(dtype).flatten(1)  # (N, D)
        if self.offset is not None:
            x = x - self.offset.to(x)
        if self.scale is not None:
            x = x * self.scale.to(x)
        return x


class OneHot(nn.Module):
    """``Discrete`` / ``MultiDiscrete`` values ``[N, *nvec_shape]`` -> concatenated one-hots."""

    def __init__(self, nvec: np.ndarray, start: np.ndarray) -> None:
        super().__init__()
        nvec = np.asarray(nvec).reshape(-1)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        # Shift so that value v of part p lands at column offsets[p] + v - start[p].
        shift = torch.as_tensor(offsets - np.asarray(start).reshape(-1), dtype=torch.int64)
        self.register_buffer("shift", shift, persistent=False)
        self.num_parts = len(nvec)
        self.out_features = int(nvec.sum())

    def forward(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        columns = x.long().reshape(-1, self.num_parts) + self.shift  # (N, P)
        one_hot = torch.zeros(columns.shape[0], self.out_features, dtype=dtype, device=x.device)
        return one_hot.scatter_(1, columns, 1.0)  # (N, sum(nvec))


def preprocessor(space: spaces.Space) -> nn.Module:
    """The float view of one part: one-hot for discrete parts, flattened floats otherwise."""
    if isinstance(space, spaces.Discrete):
        return OneHot(np.array([space.n]), np.array([space.start]))
    if isinstance(space, spaces.MultiDiscrete):
        return OneHot(space.nvec, space.start)
    if isinstance(space, spaces.MultiBinary):
        return FlattenFloat(space.shape)
    if image_layout(space) is not None:
        return FlattenFloat(space.shape, scale=1.0 / 255.0)
    return FlattenFloat(space.shape)


def action_preprocessor(space: spaces.Space) -> nn.Module:
    """Env-format actions as floats: one-hot for discrete, ``Box`` rescaled to ``[-1, 1]``."""
    if isinstance(space, spaces.Box):
        center = (space.high.astype(np.float64) + space.low) / 2.0
        half_range = np.maximum((space.high.astype(np.float64) - space.low) / 2.0, 1e-8)
        return FlattenFloat(space.shape, offset=center, scale=1.0 / half_range)
    return preprocessor(space)


# --- images --------------------------------------------------------------------------------------


class ImageEncoder(nn.Module):
    """An image part ``[N, H, W, C]`` or ``[N, C, H, W]`` (or ``[N, H, W]``) -> CNN features.

    Images at least 36 pixels on each side get the Nature-DQN stack (Mnih et al. 2015: 8x8/4,
    4x4/2, 3x3/1); smaller ones (grid worlds) two 3x3 convolutions that keep detail.

    Args:
        shape: shape of one image; layout: ``"HWC"``, ``"CHW"`` or ``"HW"``.
        scale: multiplier applied first (``1/255`` for ``uint8`` images).
    """

    def __init__(self, shape: tuple[int, ...], layout: str, scale: float | None) -> None:
        super().__init__()
        self.layout = layout
        self.scale = scale
        if layout == "HW":
            channels, height, width = 1, *shape
        elif layout == "HWC":
            height, width, channels = shape
        else:
            channels, height, width = shape
        if min(height, width) >= 36:
            convs = [(channels, 32, 8, 4, 0), (32, 64, 4, 2, 0), (64, 64, 3, 1, 0)]
        else:
            convs = [(channels, 16, 3, 1, 1), (16, 32, 3, 2 if min(height, width) >= 8 else 1, 1)]
        layers: list[nn.Module] = []
        for c_in, c_out, kernel, stride, padding in convs:
            layers += [layer_init(nn.Conv2d(c_in, c_out, kernel, stride, padding)), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            self.out_features = self.net(torch.zeros(1, channels, height, width)).shape[1]

    def forward(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        x = x.to(dtype)
        if self.scale is not None:
            x = x * self.scale
        if self.layout == "HW":
            x = x.unsqueeze(1)  # (N, 1, H, W)
        elif self.layout == "HWC":
            x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        return self.net(x)  # (N, F)


def _cnn_layout(space: spaces.Space, encoder: str) -> str | None:
    """The layout to feed a CNN with, or None for an MLP part."""
    if encoder == "mlp":
        return None
    layout = image_layout(space)
    if encoder == "cnn" and layout is None and isinstance(space, spaces.Box):
        if len(space.shape) == 2:
            return "HW"
        if len(space.shape) == 3:
            return channel_layout(space.shape)
    return layout


# --- assembly ------------------------------------------------------------------------------------


def mlp_input_widths(space: spaces.Space, encoder: str = "auto") -> list[int]:
    """The features each observation part that is not fed to a CNN brings to its MLP (flattened
    or one-hot), as :class:`ObservationEncoder` would build it, without building anything (no
    parameters, so no draw from torch's random stream)."""
    return [
        preprocessor(part).out_features
        for path, part in space_leaves(space)
        if path != (ACTION_MASK_KEY,) and _cnn_layout(part, encoder) is None
    ]


class PartEncoder(nn.Module):
    """One observation part: preprocessing (or CNN) then the MLP."""

    def __init__(self, first: nn.Module, sizes: list[int], activation: str) -> None:
        super().__init__()
        self.first = first
        self.mlp, self.out_features = mlp(first.out_features, sizes, activation)

    def forward(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        return self.mlp(self.first(x, dtype))


class ObservationEncoder(nn.Module):
    """Encodes every part of an observation and concatenates the features.

    Args:
        space: the observation space (flat, or ``Dict``/``Tuple``, nested).
        sizes: MLP sizes per part (``policy.encoder_sizes``).
        activation: MLP activation.
        encoder: ``auto`` (CNN for detected images), ``mlp`` (never a CNN) or ``cnn`` (a CNN for
            every 2-d or 3-d ``Box`` part).
    """

    def __init__(self, space: spaces.Space, sizes: list[int], activation: str, encoder: str):
        super().__init__()
        parts = {}
        for index, (path, part) in enumerate(space_leaves(space)):
            if path == (ACTION_MASK_KEY,):
                continue
            layout = _cnn_layout(part, encoder)
            if layout is None:
                first = preprocessor(part)
            else:
                scale = 1.0 / 255.0 if image_layout(part) else None
                first = ImageEncoder(part.shape, layout, scale)
            parts[str(index)] = PartEncoder(first, sizes, activation)
        if encoder == "cnn" and not any(isinstance(p.first, ImageEncoder) for p in parts.values()):
            raise UnsupportedSpaceError(
                f"policy.encoder=cnn: observation space {space} has no Box part of shape "
                f"HxW, HxWxC or CxHxW to feed a CNN (use policy.encoder=auto or mlp)"
            )
        self.parts = nn.ModuleDict(parts)
        self.out_features = sum(p.out_features for p in self.parts.values())
        self.register_load_state_dict_pre_hook(_rename_single_part_keys)

    def forward(self, leaves: list[Tensor], dtype: torch.dtype = torch.float32) -> Tensor:
        """``leaves``: the observation's parts ``[N, ...]`` in ``space_leaves`` order."""
        features = [encode(leaves[int(key)], dtype) for key, encode in self.parts.items()]
        return features[0] if len(features) == 1 else torch.cat(features, dim=-1)  # (N, F)


def _rename_single_part_keys(module, state_dict, prefix, *args) -> None:
    """Load checkpoints from before per-part encoders (``encoder.net.*``: one Box or Discrete)."""
    for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
        state_dict[prefix + "parts.0.mlp." + key[len(prefix + "net.") :]] = state_dict.pop(key)
