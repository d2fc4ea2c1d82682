"""A minimal plain-PyTorch training step of the LSTM VAE: the baseline ``textvae bench`` times the toolkit against.

No textvae code runs here: the model is ``nn.Embedding``, ``nn.LSTM`` and ``nn.Linear``, the loss
a few lines, written the way a careful plain-PyTorch script would write them. The math, the data
order (the caller hands in the same batches) and the optimizer are the toolkit's for an LSTM
encoder and an LSTM decoder conditioned on z both ways (``recipes/_base/lstm_vae.toml``, He et
al. 2019):

    [μ; log σ²] = W_q h_x + b_q,  h_x the encoder LSTM's state at the last real token (BOS … EOS)
    z = μ + σ ⊙ ε,  ε ~ N(0, I)
    c_0 = W_c z,  h_0 = tanh(c_0);  decoder LSTM over [dropout(e(x_t)); z],  dropout on its outputs
    rec = Σ_t −log softmax(W_o h_t + b_o)[x_{t+1}]  over the real target tokens only
    KL = ½ Σ_d (μ_d² + σ_d² − log σ_d² − 1)
    loss = mean over the sentences of rec + KL;  backward;  clip the gradient norm;  optimizer step

The submodules carry the toolkit's parameter names, so ``load_state_dict`` copies a toolkit
model's weights in, and random numbers are drawn in the toolkit's order (ε, then the input
dropout mask, then the output one): from the same generator state, both steps compute the same
loss and the same update, up to float rounding (``tests/test_bench.py`` checks it). Dropout draws
its mask as the toolkit does (``textvae/models/dropout.py``: 32-bit uniform integers below keep·2³²,
two per 64-bit ``random_`` call), written out here in plain PyTorch.

``graphed_train_step`` is the same step captured as one CUDA graph (PyTorch's "whole network
capture": warm-up on a side stream, then ``torch.cuda.graph``): forward, backward, clipping and the
SGD update replayed from static input buffers. A graph cannot hold data-dependent shapes, so its
loss (``static=True``) sums the cross-entropy of every position times the target mask instead of
selecting the real positions (``states[mask]``): the same value, and on batches of one sentence
length (``bucketed_batches``) the same work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout: keep each element with probability 1 − p, scale by 1 / (1 − p)."""
    if not training or p == 0:
        return x
    keep = 1.0 - p
    words = torch.empty((x.numel() + 1) // 2, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    draws = words.view(torch.int32)[: x.numel()].view(x.shape)  # uniform 32-bit integers
    mask = draws < min(round(keep * 2**32), 2**32 - 1) - 2**31  # (…) bool, True with probability keep
    return (x * mask).mul_(1.0 / keep)


class ReferenceVAE(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        pad_id: int,
        embed_dim: int,
        encoder_hidden: int,
        decoder_hidden: int,
        latent_dim: int,
        dropout_in: float,
        dropout_out: float,
    ):
        super().__init__()
        self.dropout_in, self.dropout_out = dropout_in, dropout_out
        self.encoder = nn.Module()
        self.encoder.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.encoder.lstm = nn.LSTM(embed_dim, encoder_hidden, batch_first=True)
        self.encoder.to_params = nn.Linear(encoder_hidden, 2 * latent_dim)
        self.decoder = nn.Module()
        self.decoder.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.decoder.lstm = nn.LSTM(embed_dim + latent_dim, decoder_hidden, batch_first=True)
        self.decoder.z_to_cell = nn.Linear(latent_dim, decoder_hidden, bias=False)
        self.decoder.output = nn.Linear(decoder_hidden, vocab_size)

    @classmethod
    def like(cls, model: nn.Module) -> ReferenceVAE:
        """The same network as a textvae ``SequenceVAE`` (one-layer LSTMs), with its weights."""
        encoder, decoder = model.encoder, model.decoder
        reference = cls(
            vocab_size=decoder.output.out_features,
            pad_id=decoder.embedding.padding_idx,
            embed_dim=decoder.embedding.embedding_dim,
            encoder_hidden=encoder.lstm.hidden_size,
            decoder_hidden=decoder.lstm.hidden_size,
            latent_dim=model.latent_dim,
            dropout_in=decoder.dropout_in.p,
            dropout_out=decoder.dropout_out.p,
        )
        reference.load_state_dict(model.state_dict())
        return reference.to(decoder.output.weight.device).train(model.training)

    def posterior(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """μ and log σ², (B, D) each, for padded ``tokens`` (B, T) with ``lengths`` (B,)."""
        states, _ = self.encoder.lstm(self.encoder.embedding(tokens))  # (B, T, H)
        last = states[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]  # (B, H)
        mean, logvar = self.encoder.to_params(last).chunk(2, dim=-1)
        return mean, logvar

    def reconstruction_nll(self, tokens: Tensor, lengths: Tensor, z: Tensor, static: bool = False) -> Tensor:
        """−log p(x|z) per sentence, (B,), summed over the real target tokens (``static``: every
        position's cross-entropy times the target mask, shapes fixed by (B, T))."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T−1) each
        embedded = dropout(self.decoder.embedding(inputs), self.dropout_in, self.training)  # (B, T−1, E)
        z_steps = z.unsqueeze(1).expand(-1, inputs.shape[1], -1)  # (B, T−1, D)
        c0 = self.decoder.z_to_cell(z).unsqueeze(0)  # (1, B, H)
        states, _ = self.decoder.lstm(torch.cat([embedded, z_steps], dim=-1), (torch.tanh(c0), c0))  # (B, T−1, H)
        states = dropout(states, self.dropout_out, self.training)
        mask = torch.arange(inputs.shape[1], device=tokens.device) < (lengths - 1).unsqueeze(1)  # (B, T−1)
        if static:
            logits = self.decoder.output(states)  # (B, T−1, V)
            token_nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")  # (B·(T−1),)
            return (token_nll.view_as(mask) * mask).sum(1)
        token_nll = F.cross_entropy(self.decoder.output(states[mask]), targets[mask], reduction="none")  # (N,)
        sentence = torch.arange(tokens.shape[0], device=tokens.device).unsqueeze(1).expand_as(mask)[mask]  # (N,)
        return torch.zeros(tokens.shape[0], device=tokens.device).index_add_(0, sentence, token_nll)

    def loss(self, tokens: Tensor, lengths: Tensor, static: bool = False) -> Tensor:
        """The negative ELBO, averaged over the sentences of the batch."""
        mean, logvar = self.posterior(tokens, lengths)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)  # (B, D)
        kl = 0.5 * (mean**2 + logvar.exp() - logvar - 1.0).sum(-1)  # (B,)
        return (self.reconstruction_nll(tokens, lengths, z, static) + kl).mean()


def make_optimizer(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    """SGD (He et al. 2019) or Adam, as the toolkit builds them (no momentum, no weight decay)."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr)
    return torch.optim.Adam(model.parameters(), lr=lr)


def train_step(
    model: ReferenceVAE,
    optimizer: torch.optim.Optimizer,
    tokens: Tensor,
    lengths: Tensor,
    grad_clip: float,
    static: bool = False,
) -> Tensor:
    """One update on a padded batch; returns the loss (not read back from the device)."""
    loss = model.loss(tokens, lengths, static)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


def graphed_train_step(
    model: ReferenceVAE,
    optimizer: torch.optim.Optimizer,
    tokens: Tensor,
    lengths: Tensor,
    grad_clip: float,
    warmup: int = 3,
) -> Callable[[Tensor, Tensor], Tensor]:
    """``train_step`` (static shapes) captured as one CUDA graph for batches shaped like ``tokens``
    (B, T) and ``lengths`` (B,); returns ``step(tokens, lengths) -> loss``, which copies the batch
    into the graph's input buffers and replays it. The ``warmup`` eager steps (on a side stream, as
    capture requires) and the captured one update the model too. Plain SGD only: PyTorch's Adam
    needs ``capturable=True`` to run inside a graph."""
    static_tokens, static_lengths = tokens.clone(), lengths.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            train_step(model, optimizer, static_tokens, static_lengths, grad_clip, static=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = train_step(model, optimizer, static_tokens, static_lengths, grad_clip, static=True)

    def step(tokens: Tensor, lengths: Tensor) -> Tensor:
        static_tokens.copy_(tokens, non_blocking=True)
        static_lengths.copy_(lengths, non_blocking=True)
        graph.replay()
        return static_loss

    return step
