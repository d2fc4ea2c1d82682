"""The fused LSTM VAE: R ``SequenceVAE`` rows of one shape as one model with (R, ...) weights.

Built from R unfused models (``from_models``: their weights stacked) and split back into them
(``row_state_dict``: row r's weights under the unfused names, which ``SequenceVAE.load_state_dict``
takes as they are), so each row keeps its unfused checkpoint, evaluation and tables.

Per row r, the forward pass is the unfused one (``SequenceVAE.forward``):
    q(z|x) = N(μ_r, σ_r²) from the encoder;  with BN-VAE  μ'_r = γ_r (μ_r − E_B[μ_r]) / sqrt(Var_B[μ_r] + ε_r) + β_r;
    z = μ'_r + σ_r ⊙ ε;  rec_r = −log p_r(x | z) (word dropout and dropout from the row's noise);
    KL_r per dimension in closed form;  bow_r = −Σ_t log softmax(f_r(z))[x_t] for a bag-of-words row.

Fuses: an LSTM encoder (one layer, one direction, no dropout) and an LSTM decoder (one layer), the
same sizes, dropouts and z-conditioning in every row; remedies ``textvae.models.fused.remedies``.
Anything else (the LM, IAF, other decoders or depths) is a one-line error from ``fusion_key``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textvae.data.batching import Batch
from textvae.errors import TextVAEError
from textvae.models.fused.grouped import GroupedEmbedding, GroupedLinear, GroupedLSTM
from textvae.models.fused.noise import StepNoise
from textvae.models.fused.remedies import RowRemedies
from textvae.remedies.bn_vae import BNVAE
from textvae.remedies.bow_loss import BagOfWordsLoss

# fused parameter or buffer ← the unfused model's name (the LSTMs' single layer is l0)
_COMMON = {
    "enc_embedding.weight": "encoder.embedding.weight",
    "enc_lstm.weight_ih": "encoder.lstm.weight_ih_l0",
    "enc_lstm.weight_hh": "encoder.lstm.weight_hh_l0",
    "enc_lstm.bias_ih": "encoder.lstm.bias_ih_l0",
    "enc_lstm.bias_hh": "encoder.lstm.bias_hh_l0",
    "enc_to_params.weight": "encoder.to_params.weight",
    "enc_to_params.bias": "encoder.to_params.bias",
    "dec_embedding.weight": "decoder.embedding.weight",
    "dec_lstm.weight_ih": "decoder.lstm.weight_ih_l0",
    "dec_lstm.weight_hh": "decoder.lstm.weight_hh_l0",
    "dec_lstm.bias_ih": "decoder.lstm.bias_ih_l0",
    "dec_lstm.bias_hh": "decoder.lstm.bias_hh_l0",
    "output.weight": "decoder.output.weight",
    "output.bias": "decoder.output.bias",
}
_Z_TO_CELL = {"z_to_cell.weight": "decoder.z_to_cell.weight"}
_BOW = {  # remedies.{i}. + name
    "bow_hidden.weight": "predictor.0.weight",
    "bow_hidden.bias": "predictor.0.bias",
    "bow_out.weight": "predictor.2.weight",
    "bow_out.bias": "predictor.2.bias",
}
_BN = {
    "bn_shift": "shift",
    "bn_running_mean": "norm.running_mean",
    "bn_running_var": "norm.running_var",
    "bn_batches_tracked": "norm.num_batches_tracked",
}


def fusion_key(model_spec: dict, remedies: list[dict] | tuple = ()) -> str:
    """What rows must share to fuse, read from a recipe's tables (equal strings may fuse); a model or
    remedy that cannot fuse raises a one-line ``TextVAEError`` naming why. Remedies are per row,
    except a bag-of-words head's size, which ``FusedVAE.from_models`` checks."""
    if model_spec.get("type") != "vae":
        raise TextVAEError(f"model type {model_spec.get('type')!r} does not fuse (only the LSTM VAE does)")
    encoder, decoder = model_spec.get("encoder", {}), model_spec.get("decoder", {})
    if encoder.get("type") != "lstm" or decoder.get("type") != "lstm":
        raise TextVAEError("only an LSTM encoder and an LSTM decoder fuse")
    if encoder.get("num_layers", 1) != 1 or encoder.get("bidirectional", False) or decoder.get("num_layers", 1) != 1:
        raise TextVAEError("only one-layer, one-direction LSTMs fuse")
    for remedy in remedies:
        if remedy.get("type") not in FUSIBLE_REMEDY_TYPES:
            raise TextVAEError(f"remedy {remedy.get('type')!r} does not fuse")
    return json.dumps(model_spec, sort_keys=True)


FUSIBLE_REMEDY_TYPES = ("kl_annealing", "beta", "free_bits", "word_dropout", "bow_loss", "bn_vae")


@dataclass
class FusedOutput:
    """The honest terms of every row: rec (R, B), KL per dimension (R, B, D), bow (R, B) or None."""

    rec: Tensor
    kl_per_dim: Tensor
    mean: Tensor  # (R, B, D) the posterior mean the decoder's z was drawn around (after BN-VAE)
    logvar: Tensor  # (R, B, D)
    bow: Tensor | None

    @property
    def kl(self) -> Tensor:
        return self.kl_per_dim.sum(-1)  # (R, B)


class FusedVAE(nn.Module):
    """R LSTM VAE rows with stacked weights; build with ``from_models``."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        first = models[0]
        self.rows = len(models)
        self.remedies = [RowRemedies.of(model.remedies) for model in models]
        self.latent_dim = first.latent_dim
        decoder = first.decoder
        self.pad_id = decoder.embedding.padding_idx
        self.dropout = (decoder.dropout_in.p, decoder.dropout_out.p)
        self.dims = (decoder.embedding.embedding_dim, decoder.hidden_dim)
        self.z_concat_input, self.z_init_state = decoder.z_concat_input, decoder.z_init_state
        protected, unk = None, None
        for model in models:
            for remedy in model.remedies:
                if hasattr(remedy, "protected"):
                    protected, unk = remedy.protected, remedy.unk_id
        self.register_buffer("protected", protected if protected is not None else torch.zeros(0, dtype=torch.long))
        self.unk_id = unk
        states = [model.state_dict() for model in models]
        self.names: list[dict[str, str]] = [self._row_names(model) for model in models]

        def stacked(name: str, default=None) -> Tensor:
            tensors = []
            for row, state in enumerate(states):
                if name in self.names[row]:
                    tensors.append(state[self.names[row][name]])
                else:
                    tensors.append(default(row))
            return torch.stack([t.detach() for t in tensors]).clone()

        self.enc_embedding = GroupedEmbedding(stacked("enc_embedding.weight"), self.pad_id)
        lstm_names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        self.enc_lstm = GroupedLSTM(*(stacked(f"enc_lstm.{n}") for n in lstm_names))
        self.enc_to_params = GroupedLinear(stacked("enc_to_params.weight"), stacked("enc_to_params.bias"))
        self.dec_embedding = GroupedEmbedding(stacked("dec_embedding.weight"), self.pad_id)
        self.dec_lstm = GroupedLSTM(*(stacked(f"dec_lstm.{n}") for n in lstm_names))
        self.z_to_cell = GroupedLinear(stacked("z_to_cell.weight"), None) if self.z_init_state else None
        self.output = GroupedLinear(stacked("output.weight"), stacked("output.bias"))
        self.bow_hidden = self.bow_out = None
        bow_rows = [i for i, row in enumerate(self.remedies) if row.bow]
        if bow_rows:  # rows without a BoW head carry a zero one with weight 0 (no gradient reaches it)
            like = {n: states[bow_rows[0]][self.names[bow_rows[0]][n]] for n in _BOW}
            self.bow_hidden = GroupedLinear(
                stacked("bow_hidden.weight", lambda r: torch.zeros_like(like["bow_hidden.weight"])),
                stacked("bow_hidden.bias", lambda r: torch.zeros_like(like["bow_hidden.bias"])),
            )
            self.bow_out = GroupedLinear(
                stacked("bow_out.weight", lambda r: torch.zeros_like(like["bow_out.weight"])),
                stacked("bow_out.bias", lambda r: torch.zeros_like(like["bow_out.bias"])),
            )
        self.has_bn = any(row.bn for row in self.remedies)
        if self.has_bn:
            zeros = torch.zeros(self.latent_dim)
            self.bn_shift = nn.Parameter(stacked("bn_shift", lambda r: zeros))  # (R, D) β
            self.register_buffer("bn_running_mean", stacked("bn_running_mean", lambda r: zeros))
            self.register_buffer("bn_running_var", stacked("bn_running_var", lambda r: torch.ones(self.latent_dim)))
            tracked = torch.zeros((), dtype=torch.long)
            self.register_buffer("bn_batches_tracked", stacked("bn_batches_tracked", lambda r: tracked))
            bn = [row.bn or (1.0, 0.0, 1.0) for row in self.remedies]
            self.register_buffer("bn_on", torch.tensor([row.bn is not None for row in self.remedies]))
            # settings, not state: float64 (a buffer would follow .to(dtype)), cast where used
            device = first.decoder.output.weight.device
            self.bn_settings = torch.tensor(bn, dtype=torch.float64, device=device).t()  # (3, R): γ, momentum, ε

    @classmethod
    def from_models(cls, models: list[nn.Module]) -> FusedVAE:
        """The fused model of R unfused ``SequenceVAE``s of one shape (their weights copied)."""
        if not models:
            raise TextVAEError("fusing needs at least one row")
        keys = set()
        for model in models:
            keys.add(_shape_of(model))
        if len(keys) > 1:
            raise TextVAEError("rows of different model shapes do not fuse")
        bow = {r.predictor[0].out_features for m in models for r in m.remedies if isinstance(r, BagOfWordsLoss)}
        if len(bow) > 1:
            raise TextVAEError(f"bag-of-words heads of different sizes do not fuse: hidden_dim {sorted(bow)}")
        return cls(models).to(next(models[0].parameters()).device)

    def _row_names(self, model: nn.Module) -> dict[str, str]:
        """Fused name → this row's unfused state_dict name."""
        names = dict(_COMMON)
        if model.decoder.z_init_state:
            names.update(_Z_TO_CELL)
        for index, remedy in enumerate(model.remedies):
            table = _BOW if isinstance(remedy, BagOfWordsLoss) else _BN if isinstance(remedy, BNVAE) else {}
            names.update({fused: f"remedies.{index}.{name}" for fused, name in table.items()})
        return names

    def row_state_dict(self, row: int) -> dict[str, Tensor]:
        """Row ``row``'s weights (and BN-VAE statistics) under its unfused model's names (copies)."""
        fused = self.state_dict()
        return {unfused: fused[name][row].clone() for name, unfused in self.names[row].items()}

    def forward(self, batch: Batch, noise: StepNoise | None, active: Tensor | None = None) -> FusedOutput:
        """Every row on the same ``batch``; ``noise`` None = evaluation (no dropout, z = the mean).
        ``active`` (R,) bool: rows whose BN-VAE statistics move (a finished row's stay frozen)."""
        rows, (batch_size, _) = self.rows, batch.tokens.shape
        tokens = batch.tokens.expand(rows, -1, -1)  # (R, B, T)
        states = self.enc_lstm(self.enc_embedding(tokens))  # (R, B, T, H)
        summary = states[:, torch.arange(batch_size, device=tokens.device), batch.lengths - 1]  # (R, B, H)
        mean, logvar = self.enc_to_params(summary).chunk(2, dim=-1)  # (R, B, D) each
        if self.has_bn:
            mean = self._batch_norm(mean, active)
        kl_per_dim = 0.5 * (mean**2 + logvar.exp() - logvar - 1.0)  # (R, B, D)
        z = mean if noise is None else mean + noise.eps * torch.exp(0.5 * logvar)  # (R, B, D)
        inputs = batch.decoder_inputs.expand(rows, -1, -1)  # (R, B, T-1)
        if noise is not None and noise.word_drop is not None:
            inputs = inputs.masked_fill(noise.word_drop, self.unk_id)
        embedded = self.dec_embedding(inputs)  # (R, B, T-1, E)
        if noise is not None and noise.keep_in is not None:
            embedded = embedded * noise.keep_in
        if self.z_concat_input:
            embedded = torch.cat([embedded, z.unsqueeze(2).expand(-1, -1, inputs.shape[2], -1)], dim=-1)
        state = None
        if self.z_init_state:
            cell = self.z_to_cell(z)  # (R, B, H)
            state = (torch.tanh(cell), cell)
        hidden = self.dec_lstm(embedded, state)  # (R, B, T-1, H)
        if noise is not None and noise.keep_out is not None:
            hidden = hidden * noise.keep_out
        logits = self.output(hidden)  # (R, B, T-1, V)
        targets = batch.targets.expand(rows, -1, -1)  # (R, B, T-1)
        mask = batch.target_mask  # (B, T-1)
        token_nll = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), reduction="none").view(targets.shape)
        rec = (token_nll * mask).sum(-1)  # (R, B)
        bow = None
        if self.bow_hidden is not None:
            log_probs = self.bow_out(torch.tanh(self.bow_hidden(z))).log_softmax(-1)  # (R, B, V)
            bow = -(log_probs.gather(2, targets) * mask).sum(-1)  # (R, B)
        return FusedOutput(rec, kl_per_dim, mean, logvar, bow)

    def _batch_norm(self, mean: Tensor, active: Tensor | None) -> Tensor:
        """BN-VAE on the rows that have it (``nn.BatchNorm1d``, affine off, then γ and the shift)."""
        gamma, momentum, eps = (setting.to(mean.dtype).view(-1, 1) for setting in self.bn_settings)  # (R, 1) each
        if self.training:
            batch_mean = mean.mean(1)  # (R, D)
            batch_var = mean.var(1, unbiased=False)  # (R, D)
            with torch.no_grad():
                count = mean.shape[1]
                moving = self.bn_on if active is None else self.bn_on & active  # (R,)
                unbiased = batch_var * (count / max(count - 1, 1))
                for stat, value in ((self.bn_running_mean, batch_mean), (self.bn_running_var, unbiased)):
                    moved = stat * (1 - momentum) + momentum * value  # nn.BatchNorm1d's running average
                    stat.copy_(torch.where(moving.view(-1, 1), moved, stat))
                self.bn_batches_tracked.add_(moving.long())
        else:
            batch_mean, batch_var = self.bn_running_mean, self.bn_running_var
        normalized = (mean - batch_mean.unsqueeze(1)) / torch.sqrt(batch_var.unsqueeze(1) + eps.unsqueeze(1))
        shifted = gamma.unsqueeze(1) * normalized + self.bn_shift.unsqueeze(1)
        return torch.where(self.bn_on.view(-1, 1, 1), shifted, mean)


def _shape_of(model: nn.Module) -> str:
    """What must be equal between fused rows, read from an unfused model."""
    encoder, decoder = model.encoder, model.decoder
    if type(model).__name__ != "SequenceVAE" or type(encoder).__name__ != "LSTMEncoder":
        raise TextVAEError(f"{type(model).__name__} with {type(encoder).__name__} does not fuse")
    if type(decoder).__name__ != "LSTMDecoder":
        raise TextVAEError(f"decoder {type(decoder).__name__} does not fuse (only the LSTM decoder does)")
    if encoder.directions != 1 or encoder.lstm.num_layers != 1 or decoder.num_layers != 1:
        raise TextVAEError("only one-layer, one-direction LSTMs fuse")
    return json.dumps(
        {
            "vocab": decoder.output.out_features,
            "latent": model.latent_dim,
            "encoder": [encoder.embedding.embedding_dim, encoder.lstm.hidden_size],
            "decoder": [decoder.embedding.embedding_dim, decoder.hidden_dim],
            "dropout": [decoder.dropout_in.p, decoder.dropout_out.p],
            "z": [decoder.z_init_state, decoder.z_concat_input],
            "pad": decoder.embedding.padding_idx,
        }
    )
