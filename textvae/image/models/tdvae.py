"""TD-VAE, the temporal-difference variational auto-encoder (Gregor et al. 2019, ICLR), for frame sequences.

A forward LSTM reads the encoded frames and produces belief states b_t = LSTM(enc(x_1), …, enc(x_t)).
Four distributions (Section 3, Figure 1; p_B serves at both times), Gaussians except the decoder:

    p_B(z_t | b_t)                        belief: the filtering distribution of the state at time t
    q_S(z_t1 | z_t2, b_t1, b_t2)          smoothing posterior: the earlier state given the later one
    p_T(z_t2 | z_t1)                      transition: a jump of t2 − t1 steps
    p_D(x_t2 | z_t2)                      decoder: a Bernoulli per pixel

Training (Section 4, the jumpy loss): for each sequence draw t1 < t2 with 1 ≤ t2 − t1 ≤ max_jump, sample
z_t2 ~ p_B(z_t2 | b_t2), then z_t1 ~ q_S(z_t1 | z_t2, b_t1, b_t2), and maximize

    L_t1,t2 = E[ log p_D(x_t2 | z_t2) + log p_B(z_t1 | b_t1) + log p_T(z_t2 | z_t1)
                 − log p_B(z_t2 | b_t2) − log q_S(z_t1 | z_t2, b_t1, b_t2) ].

The honest per-sequence terms are the three parts of −L, each a one-sample Monte-Carlo estimate:

    rec   = −log p_D(x_t2 | z_t2)                            (nats, summed over pixels; on grey levels
                                                              in [0, 1] it is the binary cross-entropy,
                                                              a normalized NLL only for binarized frames)
    kl_t2 = log p_B(z_t2 | b_t2) − log p_T(z_t2 | z_t1)       (estimates the KL of belief to transition)
    kl_t1 = log q_S(z_t1 | …) − log p_B(z_t1 | b_t1)          (estimates KL(q_S ‖ p_B(·|b_t1)))

so a single estimate of a "kl" term can be negative; only its expectation is a KL. ``loss`` is the batch
mean of rec + β·(kl_t1 + kl_t2) (β = 1 is the paper's loss). With ``pairs_per_sequence`` = P > 1 each
sequence gets P independent (t1, t2) pairs and its terms are their mean (the LSTM runs once).

Choices the paper leaves open or that differ from it, kept small so that a CPU can train the model:

* One layer of z (the paper stacks two for moving MNIST).
* MLP frame encoder and decoder (two hidden ReLU layers of ``hidden_dim``); the state networks
  p_B, q_S, p_T are MLPs with one tanh hidden layer of ``state_hidden_dim``.
* p_T predicts a change of state: its mean is z_t1 + f(z_t1), so a short jump starts near identity.
* ``condition_on_jump`` (default on): p_T and q_S also receive a one-hot of t2 − t1, i.e.
  p_T(z_t2 | z_t1, t2 − t1), so one model rolls out with any jump in [1, max_jump] and a rollout lines
  up with the ground truth. Off, p_T(z_t2 | z_t1) is the paper's literal form: one transition then
  stands for a jump of any length it was trained on (uniform in [1, max_jump]).
* Pairs: the jump δ = t2 − t1 is uniform in [1, min(max_jump, T − 1)], then t1 uniform in [0, T − 1 − δ].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textvae.distributions import DiagGaussian
from textvae.errors import TextVAEError
from textvae.image.models.base import IMAGE_CONTEXT, LossTerms
from textvae.registry import register


class GaussianMLP(nn.Module):
    """in_dim → tanh hidden → (mean, logvar): a diagonal Gaussian over ``out_dim`` dimensions."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 2 * out_dim))

    def forward(self, inputs: Tensor) -> DiagGaussian:
        mean, logvar = self.net(inputs).chunk(2, dim=-1)  # (..., D) each
        return DiagGaussian(mean, logvar)


@register("image_model", "tdvae", context=IMAGE_CONTEXT)
class TDVAE(nn.Module):
    """TD-VAE on sequences x (B, T, C, H, W) in [0, 1]; ``image_shape`` = (C, H, W) is one frame."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int = 8,
        belief_dim: int = 64,
        hidden_dim: int = 256,
        state_hidden_dim: int = 64,
        max_jump: int = 4,
        condition_on_jump: bool = True,
        pairs_per_sequence: int = 1,
        beta: float = 1.0,
    ):
        super().__init__()
        if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
            raise TextVAEError(f"tdvae: image_shape must be (C, H, W) of one frame, got {tuple(image_shape)}")
        for name, value in (
            ("latent_dim", latent_dim),
            ("belief_dim", belief_dim),
            ("hidden_dim", hidden_dim),
            ("state_hidden_dim", state_hidden_dim),
            ("max_jump", max_jump),
            ("pairs_per_sequence", pairs_per_sequence),
        ):
            if value < 1:
                raise TextVAEError(f"tdvae: {name} must be ≥ 1, got {value}")
        if beta < 0:
            raise TextVAEError(f"tdvae: beta must be ≥ 0, got {beta}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.latent_dim = latent_dim
        self.max_jump = max_jump
        self.condition_on_jump = condition_on_jump
        self.pairs_per_sequence = pairs_per_sequence
        self.beta = beta
        num_pixels = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        jump_dim = max_jump if condition_on_jump else 0

        self.frame_encoder = nn.Sequential(
            nn.Linear(num_pixels, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU()
        )
        self.belief_rnn = nn.LSTM(hidden_dim, belief_dim, batch_first=True)
        self.belief = GaussianMLP(belief_dim, state_hidden_dim, latent_dim)  # p_B(z | b)
        self.smoothing = GaussianMLP(latent_dim + 2 * belief_dim + jump_dim, state_hidden_dim, latent_dim)  # q_S
        self.transition_change = GaussianMLP(latent_dim + jump_dim, state_hidden_dim, latent_dim)  # p_T
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, num_pixels),
        )  # logits of p_D(x | z)

    # ---- the networks ------------------------------------------------------------------------------

    def beliefs(self, x: Tensor) -> Tensor:
        """Belief states b_t from frames x_1..x_t: x (B, T, C, H, W) → (B, T, belief_dim); causal in t."""
        self._check_sequences(x, least_len=1)
        B, T = x.shape[:2]
        features = self.frame_encoder(x.reshape(B, T, -1))  # (B, T, hidden_dim)
        beliefs, _ = self.belief_rnn(features)  # (B, T, belief_dim)
        return beliefs

    def transition(self, z: Tensor, jump_features: Tensor) -> DiagGaussian:
        """p_T(z_t2 | z_t1 [, t2 − t1]): mean z_t1 + f(z_t1); z (..., D), jump_features (..., max_jump or 0)."""
        change = self.transition_change(torch.cat([z, jump_features], dim=-1))
        return DiagGaussian(z + change.mean, change.logvar)

    def jump_features(self, jump: Tensor) -> Tensor:
        """One-hot of t2 − t1 ∈ [1, max_jump], (...,) → (..., max_jump); (..., 0) when not conditioning."""
        if not self.condition_on_jump:
            return jump.new_zeros((*jump.shape, 0), dtype=torch.float32)
        return F.one_hot(jump - 1, self.max_jump).float()

    def decode(self, z: Tensor) -> Tensor:
        """Mean of p_D(x | z): z (..., D) → frames (..., C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z)).view(*z.shape[:-1], *self.image_shape)

    # ---- training ----------------------------------------------------------------------------------

    def sample_time_pairs(
        self, batch_size: int, seq_len: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(t1, t2), each (B, P) long, with 0 ≤ t1 < t2 ≤ T − 1 and t2 − t1 ≤ max_jump.

        δ = t2 − t1 is uniform in [1, min(max_jump, T − 1)], then t1 is uniform in [0, T − 1 − δ].
        """
        if seq_len < 2:
            raise TextVAEError(f"tdvae: sequences need at least 2 frames, got {seq_len}")
        shape = (batch_size, self.pairs_per_sequence)
        longest = min(self.max_jump, seq_len - 1)
        jump = torch.randint(1, longest + 1, shape, generator=generator)  # (B, P)
        t1 = (torch.rand(shape, generator=generator) * (seq_len - jump)).long()  # (B, P), uniform in [0, T-1-δ]
        return t1, t1 + jump

    def pair_terms(self, x: Tensor, beliefs: Tensor, t1: Tensor, t2: Tensor) -> dict[str, Tensor]:
        """The one-sample terms rec, kl_t1, kl_t2 of −L_t1,t2, each (B, P), for given time pairs (B, P)."""
        B, P = t1.shape
        batch_index = torch.arange(B, device=x.device).view(B, 1).expand(B, P)
        beliefs_t1 = beliefs[batch_index, t1]  # (B, P, belief_dim)
        beliefs_t2 = beliefs[batch_index, t2]  # (B, P, belief_dim)
        frames_t2 = x[batch_index, t2].reshape(B, P, -1)  # (B, P, C*H*W)
        jump = self.jump_features(t2 - t1)  # (B, P, max_jump or 0)

        belief_t2 = self.belief(beliefs_t2)  # p_B(z_t2 | b_t2)
        z_t2 = belief_t2.rsample()  # (B, P, D)
        smoothing = self.smoothing(torch.cat([z_t2, beliefs_t1, beliefs_t2, jump], dim=-1))  # q_S
        z_t1 = smoothing.rsample()  # (B, P, D)
        belief_t1 = self.belief(beliefs_t1)  # p_B(z_t1 | b_t1)
        transition = self.transition(z_t1, jump)  # p_T(z_t2 | z_t1)

        logits = self.decoder(z_t2)  # (B, P, C*H*W)
        rec = F.binary_cross_entropy_with_logits(logits, frames_t2, reduction="none").sum(-1)  # (B, P)
        return {
            "rec": rec,
            "kl_t2": belief_t2.log_prob(z_t2) - transition.log_prob(z_t2),  # (B, P)
            "kl_t1": smoothing.log_prob(z_t1) - belief_t1.log_prob(z_t1),  # (B, P)
        }

    def loss_terms(self, x: Tensor, step: int = 0) -> LossTerms:
        """The jumpy TD-VAE loss on x (B, T, C, H, W); time pairs come from torch's global generator."""
        self._check_sequences(x, least_len=2)
        B, T = x.shape[:2]
        t1, t2 = self.sample_time_pairs(B, T)
        t1, t2 = t1.to(x.device), t2.to(x.device)
        per_pair = self.pair_terms(x, self.beliefs(x), t1, t2)
        terms = {name: value.mean(dim=1) for name, value in per_pair.items()}  # name -> (B,)
        loss = (terms["rec"] + self.beta * (terms["kl_t1"] + terms["kl_t2"])).mean()
        return LossTerms(loss=loss, terms=terms, stats={"mean_jump": (t2 - t1).float().mean().item()})

    # ---- capabilities ------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x_context: Tensor, num_jumps: int, generator: torch.Generator, jump: int = 1) -> Tensor:
        """A jumpy rollout (Section 5.2): z ~ p_B(z_t | b_t) at the last context frame t, then
        ``num_jumps`` times z ← z' ~ p_T(z' | z), each decoded to the mean of p_D(x | z).

        x_context (B, Tc, C, H, W) → (B, num_jumps, C, H, W) in [0, 1]. ``jump`` (in [1, max_jump]) is the
        time step of each transition; without ``condition_on_jump`` p_T has no jump input and ignores it.
        """
        if num_jumps < 1:
            raise TextVAEError(f"tdvae: num_jumps must be ≥ 1, got {num_jumps}")
        if not 1 <= jump <= self.max_jump:
            raise TextVAEError(f"tdvae: jump must be in [1, max_jump = {self.max_jump}], got {jump}")
        last_belief = self.beliefs(x_context)[:, -1]  # (B, belief_dim)
        B = last_belief.shape[0]
        jump_features = self.jump_features(torch.full((B,), jump, dtype=torch.long, device=last_belief.device))
        z = _sample(self.belief(last_belief), generator)  # (B, D)
        frames = []
        for _ in range(num_jumps):
            z = _sample(self.transition(z, jump_features), generator)  # (B, D)
            frames.append(self.decode(z))  # (B, C, H, W)
        return torch.stack(frames, dim=1)  # (B, num_jumps, C, H, W)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Filtering reconstructions: the mean of p_D(x_t | z_t) at z_t = mean of p_B(z_t | b_t), (B, T, C, H, W)."""
        return self.decode(self.belief(self.beliefs(x)).mean)

    @torch.no_grad()
    def figures(
        self,
        x: Tensor,
        generator: torch.Generator,
        num_sequences: int = 3,
        num_rollouts: int = 3,
        context_len: int | None = None,
    ) -> dict[str, Tensor]:
        """Jumpy predictions as image grids, one per jump size (1 and max_jump; only 1 without conditioning).

        For each of the first ``num_sequences`` sequences: a ground-truth row (the ``context_len`` observed
        frames, default max(2, T // 4), then the true frames every ``jump`` steps), followed by
        ``num_rollouts`` rows of the same context then a ``predict`` rollout. Returns
        {"jumpy_rollout_jump<δ>": (num_sequences·(1 + num_rollouts), context_len + num_jumps, C, H, W)}.
        """
        self._check_sequences(x, least_len=2)
        T = x.shape[1]
        context_len = max(2, T // 4) if context_len is None else context_len
        if not 1 <= context_len < T:
            raise TextVAEError(f"tdvae: context_len must be in [1, T − 1 = {T - 1}], got {context_len}")
        n = min(num_sequences, x.shape[0])
        context = x[:n, :context_len]  # (n, Tc, C, H, W)
        jumps = sorted({1, self.max_jump}) if self.condition_on_jump else [1]
        grids = {}
        for jump in jumps:
            num_jumps = (T - context_len) // jump
            if num_jumps < 1:
                continue
            last = context_len - 1
            truth = x[:n, last + jump : last + num_jumps * jump + 1 : jump]  # (n, J, C, H, W)
            repeated = context.repeat_interleave(num_rollouts, dim=0)  # (n·R, Tc, C, H, W)
            rollouts = self.predict(repeated, num_jumps, generator, jump=jump)  # (n·R, J, C, H, W)
            rollouts = rollouts.view(n, num_rollouts, num_jumps, *self.image_shape)  # (n, R, J, C, H, W)
            rows = torch.cat(
                [
                    torch.cat([context, truth], dim=1).unsqueeze(1),  # (n, 1, Tc + J, C, H, W)
                    torch.cat([context.unsqueeze(1).expand(-1, num_rollouts, -1, -1, -1, -1), rollouts], dim=2),
                ],
                dim=1,
            )  # (n, 1 + R, Tc + J, C, H, W)
            grids[f"jumpy_rollout_jump{jump}"] = rows.reshape(
                n * (1 + num_rollouts), context_len + num_jumps, *self.image_shape
            )
        return grids

    def _check_sequences(self, x: Tensor, least_len: int) -> None:
        if x.dim() != 5 or tuple(x.shape[2:]) != self.image_shape:
            raise TextVAEError(f"tdvae: expected sequences (B, T, {self.image_shape}), got {tuple(x.shape)}")
        if x.shape[1] < least_len:
            raise TextVAEError(f"tdvae: sequences need at least {least_len} frames, got {x.shape[1]}")


def _sample(distribution: DiagGaussian, generator: torch.Generator) -> Tensor:
    """A sample whose noise comes from ``generator`` (on its own device), moved to the distribution's."""
    noise = torch.randn(distribution.mean.shape, generator=generator, device=generator.device)
    return distribution.mean + noise.to(distribution.mean.device, distribution.mean.dtype) * distribution.std
