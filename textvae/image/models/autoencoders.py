"""Deterministic autoencoders: plain, denoising, sparse, k-sparse and contractive.

All share one network: an encoder body (``networks.ImageEncoder``), a code layer
h = a(W·f(x) + b) of ``code_dim`` units, and a mirrored decoder whose output o gives the
reconstruction x̂ = sigmoid(o). The per-image reconstruction term ``rec`` is
    "bce": −Σ_i [x_i log x̂_i + (1 − x_i) log(1 − x̂_i)]   (from the logits, stable)
    "mse": Σ_i (x̂_i − x_i)²
summed over pixels; on grey-level data the BCE is a cross-entropy, not a normalized NLL.

The variants differ in one hook each, and the training loss is
    loss = mean_b [rec_b + Σ_p weight_p · penalty_p,b];
``terms`` hold ``rec`` and each penalty unweighted, (B,).
- ``corrupt`` (denoising, Vincent et al. 2010): the encoder sees x̃ ~ q(x̃|x), the target stays x.
- ``code`` (k-sparse, Makhzani & Frey 2013): only the k largest code units are kept.
- ``penalties`` (sparse: Ng's KL(ρ‖ρ̂) or L1; contractive, Rifai et al. 2011: ‖J_h(x)‖²_F).

Capabilities: ``reconstruct``, ``encode`` / ``decode`` (interpolation in code space).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textvae.errors import TextVAEError
from textvae.image.models.base import IMAGE_CONTEXT, LossTerms
from textvae.image.models.networks import Activation, ImageDecoder, ImageEncoder, activation_layer
from textvae.registry import register

Reconstruction = Literal["bce", "mse"]
CodeActivation = Literal["linear", "sigmoid", "relu", "tanh"]


@register("image_model", "autoencoder", context=IMAGE_CONTEXT)
class Autoencoder(nn.Module):
    """A deterministic autoencoder x → h → x̂; the base of the variants below (each overrides one hook)."""

    recipe_name = "autoencoder"  # the registered name, for error messages

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        code_dim: int = 32,
        hidden_dims: tuple[int, ...] = (256,),
        conv_channels: tuple[int, ...] = (),
        activation: Activation = "relu",
        code_activation: CodeActivation = "linear",
        reconstruction: Reconstruction = "bce",
    ):
        super().__init__()
        if code_dim < 1:
            raise TextVAEError(f"{self.recipe_name}: code_dim must be ≥ 1, got {code_dim}")
        if reconstruction not in ("bce", "mse"):
            raise TextVAEError(f"{self.recipe_name}: reconstruction must be 'bce' or 'mse', got {reconstruction!r}")
        self.image_shape = tuple(image_shape)
        self.code_dim = code_dim
        self.reconstruction = reconstruction
        self.encoder = ImageEncoder(self.image_shape, tuple(hidden_dims), activation, tuple(conv_channels))
        self.code_layer = nn.Linear(self.encoder.feature_dim, code_dim)
        self.code_activation = activation_layer(code_activation)
        self.decoder = ImageDecoder(
            code_dim, self.image_shape, self.image_shape[0], tuple(hidden_dims), activation, tuple(conv_channels)
        )
        self.penalty_weights: dict[str, float] = {}  # penalty name -> its weight in ``loss``

    # --- hooks -------------------------------------------------------------------------------
    def corrupt(self, x: Tensor) -> Tensor:
        """The encoder's input; the reconstruction target is always the clean x."""
        return x

    def pre_activation(self, inputs: Tensor) -> Tensor:
        return self.code_layer(self.encoder(inputs))  # (B, code_dim)

    def code(self, inputs: Tensor, step: int | None = None) -> Tensor:
        """h = a(W·f(x) + b), (B, code_dim); ``step`` is for schedules (None: the trained model)."""
        return self.code_activation(self.pre_activation(inputs))

    def penalties(self, inputs: Tensor, code: Tensor) -> dict[str, Tensor]:
        """Unweighted per-example penalties, name -> (B,)."""
        return {}

    def step_stats(self, step: int) -> dict[str, float]:
        return {}

    # --- the contract ------------------------------------------------------------------------
    def reconstruction_error(self, output: Tensor, target: Tensor) -> Tensor:
        """``rec`` per image, (B,): summed BCE from the logits, or summed squared error of sigmoid(output)."""
        if self.reconstruction == "bce":
            return F.binary_cross_entropy_with_logits(output, target, reduction="none").flatten(1).sum(-1)
        return (torch.sigmoid(output) - target).pow(2).flatten(1).sum(-1)

    def loss_terms(self, x: Tensor, step: int = 0) -> LossTerms:
        inputs = self.corrupt(x)  # (B, C, H, W)
        code = self.code(inputs, step)  # (B, code_dim)
        rec = self.reconstruction_error(self.decoder(code), x)  # (B,)
        penalties = self.penalties(inputs, code)
        objective = rec
        for name, value in penalties.items():
            objective = objective + self.penalty_weights[name] * value
        return LossTerms(loss=objective.mean(), terms={"rec": rec, **penalties}, stats=self.step_stats(step))

    def encode(self, x: Tensor) -> Tensor:
        """The code h of clean images, (B, code_dim)."""
        return self.code(x, None)

    def decode(self, code: Tensor) -> Tensor:
        """Images x̂ = sigmoid(decoder(h)) in [0, 1], (B, C, H, W)."""
        return torch.sigmoid(self.decoder(code))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))  # (B, C, H, W)


@register("image_model", "denoising_autoencoder", context=IMAGE_CONTEXT)
class DenoisingAutoencoder(Autoencoder):
    """Denoising autoencoder (Vincent et al. 2010): minimize E_{x̃ ~ q(x̃|x)} L(x, g(f(x̃))).

    Corruptions (applied in this order, only in training mode, so evaluation reports the clean
    reconstruction error that the other autoencoders report):
        masking noise: x̃_i = 0 with probability ``mask_probability`` ν, else x_i;
        additive isotropic Gaussian noise: x̃ = x + σ ε, ε ~ N(0, I), σ = ``noise_std``.
    Either may be 0; at least one must be positive. Defaults: one sigmoid layer of 1000 units and
    25% masking noise (Vincent et al. 2010, MNIST).
    """

    recipe_name = "denoising_autoencoder"  # the registered name, for error messages

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        code_dim: int = 1000,
        hidden_dims: tuple[int, ...] = (),
        conv_channels: tuple[int, ...] = (),
        activation: Activation = "sigmoid",
        code_activation: CodeActivation = "sigmoid",
        reconstruction: Reconstruction = "bce",
        mask_probability: float = 0.25,
        noise_std: float = 0.0,
    ):
        if not 0.0 <= mask_probability < 1.0:
            raise TextVAEError(f"denoising_autoencoder: mask_probability must be in [0, 1), got {mask_probability}")
        if noise_std < 0.0:
            raise TextVAEError(f"denoising_autoencoder: noise_std must be ≥ 0, got {noise_std}")
        if mask_probability == 0.0 and noise_std == 0.0:
            raise TextVAEError("denoising_autoencoder: set mask_probability > 0 or noise_std > 0 (no corruption)")
        super().__init__(image_shape, code_dim, hidden_dims, conv_channels, activation, code_activation, reconstruction)
        self.mask_probability = mask_probability
        self.noise_std = noise_std

    def corrupt(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        if self.mask_probability > 0:
            keep = torch.rand_like(x) >= self.mask_probability  # (B, C, H, W)
            x = x * keep
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        return x


@register("image_model", "sparse_autoencoder", context=IMAGE_CONTEXT)
class SparseAutoencoder(Autoencoder):
    """Sparse autoencoder with a penalty on the code activations h ∈ (0, 1)^D.

    ``penalty = "kl"`` (Ng, CS294A lecture notes): ρ̂_j = (1/B) Σ_b h_bj, the batch's mean activation
    of unit j, and
        sparsity = Σ_j KL(ρ‖ρ̂_j) = Σ_j [ρ log(ρ/ρ̂_j) + (1 − ρ) log((1 − ρ)/(1 − ρ̂_j))].
    ρ̂ is a batch statistic, so the term is the same for every example of a batch (reported as
    (B,) with that value; its mean is the penalty). Needs ``code_activation = "sigmoid"``.
    ``penalty = "l1"``: sparsity = Σ_j |h_bj| per example.
    ``loss`` adds ``sparsity_weight`` · sparsity (β of the notes). Defaults: the notes' MNIST
    exercise (196 sigmoid units, ρ = 0.1, β = 3).
    """

    recipe_name = "sparse_autoencoder"  # the registered name, for error messages

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        code_dim: int = 196,
        hidden_dims: tuple[int, ...] = (),
        conv_channels: tuple[int, ...] = (),
        activation: Activation = "sigmoid",
        code_activation: CodeActivation = "sigmoid",
        reconstruction: Reconstruction = "bce",
        penalty: Literal["kl", "l1"] = "kl",
        target_activation: float = 0.1,
        sparsity_weight: float = 3.0,
    ):
        if not 0.0 < target_activation < 1.0:
            raise TextVAEError(f"sparse_autoencoder: target_activation ρ must be in (0, 1), got {target_activation}")
        if penalty == "kl" and code_activation != "sigmoid":
            raise TextVAEError(
                f"sparse_autoencoder: the KL penalty needs code_activation 'sigmoid', not {code_activation!r}"
            )
        if sparsity_weight < 0.0:
            raise TextVAEError(f"sparse_autoencoder: sparsity_weight must be ≥ 0, got {sparsity_weight}")
        super().__init__(image_shape, code_dim, hidden_dims, conv_channels, activation, code_activation, reconstruction)
        self.penalty = penalty
        self.target_activation = target_activation
        self.penalty_weights = {"sparsity": sparsity_weight}

    def penalties(self, inputs: Tensor, code: Tensor) -> dict[str, Tensor]:
        if self.penalty == "l1":
            return {"sparsity": code.abs().sum(-1)}
        rho = self.target_activation
        eps = torch.finfo(code.dtype).eps  # keeps log(ρ̂) and log(1 − ρ̂) finite when units saturate
        rho_hat = code.mean(0).clamp(eps, 1 - eps)  # (D,)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))  # (D,)
        return {"sparsity": kl.sum().expand(code.shape[0])}


@register("image_model", "k_sparse_autoencoder", context=IMAGE_CONTEXT)
class KSparseAutoencoder(Autoencoder):
    """k-sparse autoencoder (Makhzani & Frey 2013): linear code units z = W·f(x) + b, then
        Γ = supp_k(z) (the k largest units),  h = z ⊙ 1_Γ,
    and the decoder sees h; the gradient reaches only the units in Γ.

    Schedule (optional; Makhzani & Frey start with a large k so that no unit dies): with
    ``k_start`` set, k goes linearly from ``k_start`` to ``k`` over ``k_schedule_steps`` training
    steps, then stays at k. The schedule is used in training mode; evaluation and ``encode`` use k.
    Defaults: 1000 units, k = 25, squared error (the paper's MNIST row).
    """

    recipe_name = "k_sparse_autoencoder"  # the registered name, for error messages

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        code_dim: int = 1000,
        k: int = 25,
        k_start: int | None = None,
        k_schedule_steps: int = 0,
        hidden_dims: tuple[int, ...] = (),
        conv_channels: tuple[int, ...] = (),
        activation: Activation = "relu",
        reconstruction: Reconstruction = "mse",
    ):
        if not 1 <= k <= code_dim:
            raise TextVAEError(f"k_sparse_autoencoder: k must be in [1, code_dim = {code_dim}], got {k}")
        if k_start is not None and not k <= k_start <= code_dim:
            raise TextVAEError(
                f"k_sparse_autoencoder: k_start must be in [k = {k}, code_dim = {code_dim}], got {k_start}"
            )
        if k_start is not None and k_schedule_steps < 1:
            raise TextVAEError(f"k_sparse_autoencoder: k_start needs k_schedule_steps ≥ 1, got {k_schedule_steps}")
        if k_start is None and k_schedule_steps != 0:
            raise TextVAEError("k_sparse_autoencoder: k_schedule_steps needs k_start (the k to start from)")
        super().__init__(image_shape, code_dim, hidden_dims, conv_channels, activation, "linear", reconstruction)
        self.k = k
        self.k_start = k_start
        self.k_schedule_steps = k_schedule_steps

    def current_k(self, step: int) -> int:
        """k at a training step: linear from ``k_start`` down to ``k``, then constant."""
        if self.k_start is None or step >= self.k_schedule_steps:
            return self.k
        return round(self.k_start + (self.k - self.k_start) * step / self.k_schedule_steps)

    def code(self, inputs: Tensor, step: int | None = None) -> Tensor:
        pre = self.pre_activation(inputs)  # (B, code_dim)
        k = self.current_k(step) if self.training and step is not None else self.k
        top = pre.topk(k, dim=-1)  # values and indices (B, k)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)  # (B, code_dim), k nonzero

    def step_stats(self, step: int) -> dict[str, float]:
        return {"k": float(self.current_k(step) if self.training else self.k)}


@register("image_model", "contractive_autoencoder", context=IMAGE_CONTEXT)
class ContractiveAutoencoder(Autoencoder):
    """Contractive autoencoder (Rifai et al. 2011): penalty ‖J_h(x)‖²_F = Σ_ij (∂h_j/∂x_i)².

    ``jacobian = "closed_form"`` (Rifai et al. Eq. 5; the encoder must be one sigmoid layer,
    h = sigmoid(W x + b), so J = diag(h ⊙ (1 − h)) W):
        ‖J‖²_F = Σ_j (h_j (1 − h_j))² Σ_i W_ji².
    ``jacobian = "autograd"``: any encoder; the per-example Jacobian (D, C·H·W) by reverse-mode
    autodiff (``torch.func.jacrev`` vectorized over the batch), differentiable for training.
    ``loss`` adds ``contractive_weight`` · contractive (λ of the paper). Defaults: one sigmoid layer
    of 1000 units (the paper's MNIST CAE).
    """

    recipe_name = "contractive_autoencoder"  # the registered name, for error messages

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        code_dim: int = 1000,
        hidden_dims: tuple[int, ...] = (),
        conv_channels: tuple[int, ...] = (),
        activation: Activation = "sigmoid",
        code_activation: CodeActivation = "sigmoid",
        reconstruction: Reconstruction = "bce",
        contractive_weight: float = 0.1,
        jacobian: Literal["closed_form", "autograd"] = "closed_form",
    ):
        if jacobian == "closed_form" and (hidden_dims or conv_channels or code_activation != "sigmoid"):
            raise TextVAEError(
                "contractive_autoencoder: the closed-form Jacobian needs one sigmoid layer "
                "(hidden_dims = [], conv_channels = [], code_activation = 'sigmoid'); use jacobian = 'autograd'"
            )
        if contractive_weight < 0.0:
            raise TextVAEError(f"contractive_autoencoder: contractive_weight must be ≥ 0, got {contractive_weight}")
        super().__init__(image_shape, code_dim, hidden_dims, conv_channels, activation, code_activation, reconstruction)
        self.jacobian = jacobian
        self.penalty_weights = {"contractive": contractive_weight}

    def jacobian_norm_closed_form(self, code: Tensor) -> Tensor:
        """Σ_j (h_j (1 − h_j))² Σ_i W_ji² from the sigmoid code h (B, D), (B,)."""
        row_norms = self.code_layer.weight.pow(2).sum(-1)  # (D,)
        return ((code * (1 - code)).pow(2) * row_norms).sum(-1)

    def jacobian_norm_autograd(self, inputs: Tensor) -> Tensor:
        """‖∂h/∂x‖²_F per example by autodiff, (B,); differentiable w.r.t. the parameters when
        gradients are enabled (computed even under ``torch.no_grad``, then detached)."""
        differentiable = torch.is_grad_enabled()

        def single_code(image: Tensor) -> Tensor:  # (C, H, W) -> (D,)
            return self.code(image.unsqueeze(0), None).squeeze(0)

        with torch.enable_grad():
            jacobians = torch.func.vmap(torch.func.jacrev(single_code))(inputs)  # (B, D, C, H, W)
            norms = jacobians.pow(2).flatten(1).sum(-1)  # (B,)
        return norms if differentiable else norms.detach()

    def penalties(self, inputs: Tensor, code: Tensor) -> dict[str, Tensor]:
        if self.jacobian == "closed_form":
            return {"contractive": self.jacobian_norm_closed_form(code)}
        return {"contractive": self.jacobian_norm_autograd(inputs)}
