"""Observation encoders for the steering networks: a LeRobot-normalized batch dict -> (B, output_dim).

The actor and critics of DSRL / VGD are small and do not reuse the base policy's encoder (a VLA
is only the frozen decoder): low-dim vectors are concatenated as they are, and each camera goes
through a small CNN ending in a spatial softmax (keypoints) or global average pooling and a
Linear -> LayerNorm -> Tanh bottleneck, as in DSRL-pi0's pixel SAC (4 x 32 channels, 50-d).

Inputs are what LeRobot's preprocessor produces: `observation.state` (B, D),
`observation.environment_state` (B, D), `observation.images.<cam>` (B, C, H, W), each optionally
with a history dim after the batch (B, T, ...) from `n_obs_steps > 1`; only the last step is used.
Language features are ignored (the steering networks act for one task).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lerobot.configs import FeatureType, PolicyFeature
from lerobot.utils.constants import OBS_ENV_STATE, OBS_STATE

Pooling = Literal["spatial_softmax", "avg"]


def last_step(x: Tensor, feature_ndim: int) -> Tensor:
    """Drop a history dim: (B, T, *feature) -> (B, *feature); (B, *feature) passes through."""
    if x.dim() == feature_ndim + 2:
        return x[:, -1]
    if x.dim() != feature_ndim + 1:
        raise ValueError(f"expected {feature_ndim + 1} or {feature_ndim + 2} dims, got shape {tuple(x.shape)}")
    return x


def _state_keys(input_features: Mapping[str, PolicyFeature]) -> list[str]:
    keys = [k for k, f in input_features.items() if f.type in (FeatureType.STATE, FeatureType.ENV)]
    # Fixed order (state, env state, others by name) so a checkpoint's layout does not depend on
    # the order of a config's dict.
    return sorted(keys, key=lambda k: (k != OBS_STATE, k != OBS_ENV_STATE, k))


def _image_keys(input_features: Mapping[str, PolicyFeature]) -> list[str]:
    return sorted(k for k, f in input_features.items() if f.type is FeatureType.VISUAL)


class StateEncoder(nn.Module):
    """Concatenation of the STATE / ENV features (last time step), standardized where asked.

    `standardize` {key: (mean, std)} rescales features that reach the networks unnormalized because
    the base's processor leaves them as they are (e.g. a diffusion base's ENV block/bowl poses, in
    metres with 1-10 cm spreads): (x - mean) / max(std, 0.01). The statistics are buffers, saved
    with the networks, so a checkpoint encodes exactly as it was trained.
    """

    def __init__(self, input_features: Mapping[str, PolicyFeature],
                 standardize: Mapping[str, tuple[Tensor, Tensor]] | None = None):
        super().__init__()
        self.keys = _state_keys(input_features)
        self.shapes = {k: tuple(input_features[k].shape) for k in self.keys}
        self.output_dim = sum(math.prod(s) for s in self.shapes.values())
        centers, scales = [], []
        for key in self.keys:
            n = math.prod(self.shapes[key])
            mean, std = (standardize or {}).get(key, (torch.zeros(n), torch.ones(n)))
            centers.append(torch.as_tensor(mean, dtype=torch.float32).reshape(n))
            scales.append(torch.as_tensor(std, dtype=torch.float32).reshape(n).clamp_min(0.01))
        self.register_buffer("center", torch.cat(centers) if centers else torch.zeros(0))
        self.register_buffer("scale", torch.cat(scales) if scales else torch.ones(0))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        parts = [last_step(batch[k], len(self.shapes[k])).flatten(1) for k in self.keys]
        return (torch.cat(parts, dim=-1) - self.center) / self.scale


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) -> (B, 2C): per channel, the softmax-weighted mean (x, y) position in [-1, 1].

    Keypoints keep *where* things are, which pooling throws away and manipulation needs. The
    temperature is learned (starts at 1).
    """

    def __init__(self, height: int, width: int):
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("pos", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        attention = F.softmax(x.flatten(2) / self.log_temperature.exp(), dim=-1)  # (B, C, HW)
        return (attention @ self.pos).reshape(b, 2 * c)


class ConvEncoder(nn.Module):
    """One camera image (B, C, H, W) -> (B, latent_dim): conv stack, pooling, LN-Tanh bottleneck."""

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int] = (32, 32, 32, 32),
        strides: Sequence[int] = (2, 1, 1, 1),
        kernel_size: int = 3,
        pooling: Pooling = "spatial_softmax",
        latent_dim: int = 50,
    ):
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError("channels and strides must be non-empty and of equal length")
        c_in, h, w = image_shape
        convs: list[nn.Module] = []
        for c_out, stride in zip(channels, strides, strict=True):
            convs += [nn.Conv2d(c_in, c_out, kernel_size, stride=stride), nn.ReLU()]
            c_in = c_out
        convs.pop()  # keypoints / pooling read the last conv's raw response
        self.convs = nn.Sequential(*convs)
        with torch.no_grad():
            _, c, fh, fw = self.convs(torch.zeros(1, *image_shape)).shape
        if pooling == "spatial_softmax":
            self.pool: nn.Module = SpatialSoftmax(fh, fw)
            pooled = 2 * c
        elif pooling == "avg":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = c
        else:
            raise ValueError(f"pooling must be 'spatial_softmax' or 'avg', got {pooling!r}")
        self.project = nn.Sequential(nn.Linear(pooled, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.output_dim = latent_dim

    def forward(self, image: Tensor) -> Tensor:
        return self.project(self.pool(self.convs(image)))


class ImageEncoder(nn.Module):
    """All cameras -> concatenation of per-camera latents, (B, n_cameras * latent_dim).

    `shared=True` runs one CNN over every camera (one pass, cameras stacked on the batch dim; needs
    equal shapes); `shared=False` gives each camera its own CNN.
    """

    def __init__(self, input_features: Mapping[str, PolicyFeature], *, shared: bool = True, **conv_kwargs):
        super().__init__()
        self.keys = _image_keys(input_features)
        if not self.keys:
            raise ValueError("ImageEncoder needs at least one VISUAL feature")
        shapes = {tuple(input_features[k].shape) for k in self.keys}
        self.shared = shared
        if shared:
            if len(shapes) != 1:
                raise ValueError(f"a shared image encoder needs equal camera shapes, got {sorted(shapes)}")
            self.image_shape = shapes.pop()
            self.encoder = ConvEncoder(self.image_shape, **conv_kwargs)
            latent = self.encoder.output_dim
        else:
            self.image_shape = None
            # ModuleDict keys may not contain dots.
            self.encoders = nn.ModuleDict(
                {k.replace(".", "_"): ConvEncoder(tuple(input_features[k].shape), **conv_kwargs) for k in self.keys}
            )
            latent = next(iter(self.encoders.values())).output_dim
        self.output_dim = latent * len(self.keys)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        images = [last_step(batch[k], 3) for k in self.keys]
        if self.shared:
            b = images[0].shape[0]
            z = self.encoder(torch.cat(images, dim=0))  # (n_cam * B, latent)
            return z.reshape(len(self.keys), b, -1).transpose(0, 1).flatten(1)
        return torch.cat([self.encoders[k.replace(".", "_")](x) for k, x in zip(self.keys, images, strict=True)], -1)


class ObservationEncoder(nn.Module):
    """A LeRobot batch -> one flat feature vector for the actor and critics: [state | cameras].

    `output_dim` is what the networks in `networks.py` take as `obs_dim`. Built from the policy's
    `input_features` (LeRobot `PolicyFeature`s), so it follows whatever the dataset or env provides.
    Observations must already be normalized by the policy's preprocessor.
    """

    def __init__(
        self,
        input_features: Mapping[str, PolicyFeature],
        *,
        image_channels: Sequence[int] = (32, 32, 32, 32),
        image_strides: Sequence[int] = (2, 1, 1, 1),
        image_kernel_size: int = 3,
        image_pooling: Pooling = "spatial_softmax",
        image_latent_dim: int = 50,
        shared_image_encoder: bool = True,
        standardize: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    ):
        super().__init__()
        self.state = StateEncoder(input_features, standardize)
        self.images: ImageEncoder | None = None
        if _image_keys(input_features):
            self.images = ImageEncoder(
                input_features,
                shared=shared_image_encoder,
                channels=image_channels,
                strides=image_strides,
                kernel_size=image_kernel_size,
                pooling=image_pooling,
                latent_dim=image_latent_dim,
            )
        self.output_dim = self.state.output_dim + (self.images.output_dim if self.images else 0)
        if self.output_dim == 0:
            raise ValueError("no STATE, ENV or VISUAL input features to encode")

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        parts = []
        if self.state.keys:
            parts.append(self.state(batch))
        if self.images is not None:
            parts.append(self.images(batch))
        return torch.cat(parts, dim=-1)
