"""Encoder and decoder bodies shared by the image models: an MLP, or a small convolutional stack.

``ImageEncoder`` maps images (B, C, H, W) to features (B, F); a model puts its own head on top
(a code layer, or the mean and log-variance of q(z|x)). ``ImageDecoder`` maps a code (B, D) to
per-pixel output parameters (B, P·C, H, W), unconstrained (logits, means, log-scales); a
likelihood (``likelihoods.py``) or a model turns them into images.

Convolutional layers are 4×4 with stride 2 and padding 1, so each halves the height and width
(28 → 14 → 7 for MNIST); the decoder mirrors them with transposed convolutions. Fully connected
layers (``hidden_dims``) sit after the convolutions in the encoder and before them in the decoder.
"""

from __future__ import annotations

import itertools
from typing import Literal

from torch import Tensor, nn

from textvae.errors import TextVAEError

Activation = Literal["tanh", "relu", "elu", "leaky_relu", "sigmoid", "softplus"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


def activation_layer(name: str) -> nn.Module:
    """A fresh activation module by name (``Activation``); "linear" is the identity."""
    if name == "linear":
        return nn.Identity()
    if name not in _ACTIVATIONS:
        raise TextVAEError(f"unknown activation {name!r}; choose one of: linear, {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def check_body_sizes(
    image_shape: tuple[int, int, int], hidden_dims: tuple[int, ...], conv_channels: tuple[int, ...], where: str
) -> None:
    """One-line TextVAEErrors for sizes the bodies cannot take."""
    if any(size < 1 for size in hidden_dims):
        raise TextVAEError(f"{where}: hidden_dims must all be ≥ 1, got {list(hidden_dims)}")
    if any(size < 1 for size in conv_channels):
        raise TextVAEError(f"{where}: conv_channels must all be ≥ 1, got {list(conv_channels)}")
    _, height, width = image_shape
    factor = 2 ** len(conv_channels)
    if height % factor or width % factor:
        raise TextVAEError(
            f"{where}: {len(conv_channels)} stride-2 convolutions need height and width divisible by {factor}, "
            f"got {height}×{width}"
        )


def _mlp(sizes: list[int], activation: str, activate_last: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (size_in, size_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(size_in, size_out))
        if activate_last or i < len(sizes) - 2:
            layers.append(activation_layer(activation))
    return layers


class ImageEncoder(nn.Module):
    """Images (B, C, H, W) → features (B, F): [conv, act]* → flatten → [linear, act]*.

    With no convolutions and no hidden layers the features are the flattened pixels (F = C·H·W),
    so a model's head on top is a single-layer encoder.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden_dims: tuple[int, ...],
        activation: str,
        conv_channels: tuple[int, ...] = (),
    ):
        super().__init__()
        check_body_sizes(image_shape, hidden_dims, conv_channels, "encoder")
        channels, height, width = image_shape
        layers: list[nn.Module] = []
        for channels_in, channels_out in zip((channels, *conv_channels), conv_channels, strict=False):
            layers += [nn.Conv2d(channels_in, channels_out, kernel_size=4, stride=2, padding=1)]
            layers += [activation_layer(activation)]
        layers.append(nn.Flatten())
        scale = 2 ** len(conv_channels)
        flat_dim = (conv_channels[-1] if conv_channels else channels) * (height // scale) * (width // scale)
        layers += _mlp([flat_dim, *hidden_dims], activation, activate_last=True)
        self.layers = nn.Sequential(*layers)
        self.feature_dim = hidden_dims[-1] if hidden_dims else flat_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # (B, F)


class ImageDecoder(nn.Module):
    """Codes (B, D) → output parameters (B, out_channels, H, W), no final activation.

    ``hidden_dims`` and ``conv_channels`` are given in the encoder's order; the decoder mirrors
    them (an encoder 784-200-100 pairs with a decoder 100-200-784).
    """

    def __init__(
        self,
        input_dim: int,
        image_shape: tuple[int, int, int],
        out_channels: int,
        hidden_dims: tuple[int, ...],
        activation: str,
        conv_channels: tuple[int, ...] = (),
    ):
        super().__init__()
        check_body_sizes(image_shape, hidden_dims, conv_channels, "decoder")
        _, height, width = image_shape
        self.image_shape = (out_channels, height, width)
        mirrored_hidden = list(reversed(hidden_dims))
        if not conv_channels:
            layers = _mlp([input_dim, *mirrored_hidden, out_channels * height * width], activation, activate_last=False)
            layers.append(nn.Unflatten(1, self.image_shape))
        else:
            scale = 2 ** len(conv_channels)
            first_shape = (conv_channels[-1], height // scale, width // scale)
            layers = _mlp(
                [input_dim, *mirrored_hidden, first_shape[0] * first_shape[1] * first_shape[2]], activation, True
            )
            layers.append(nn.Unflatten(1, first_shape))
            mirrored_channels = list(reversed(conv_channels))
            for i, channels_in in enumerate(mirrored_channels):
                last = i == len(mirrored_channels) - 1
                channels_out = out_channels if last else mirrored_channels[i + 1]
                layers.append(nn.ConvTranspose2d(channels_in, channels_out, kernel_size=4, stride=2, padding=1))
                if not last:
                    layers.append(activation_layer(activation))
        self.layers = nn.Sequential(*layers)

    def forward(self, code: Tensor) -> Tensor:
        return self.layers(code)  # (B, out_channels, H, W)
