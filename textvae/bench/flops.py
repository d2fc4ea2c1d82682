"""FLOP counts of a training step and of IW-NLL, analytic: 2 × the multiply–accumulates of every
matrix product on the real tokens (padding is not useful work), ×3 for training."""

from __future__ import annotations

import torch

from textvae.data.batching import Batch
from textvae.errors import TextVAEError
from textvae.models.cnn_decoder import DilatedCNNDecoder
from textvae.models.encoders import LSTMEncoder
from textvae.models.lstm_decoder import LSTMDecoder


def _lstm_macs_per_step(input_dim: int, hidden_dim: int, layers: int, directions: int = 1) -> int:
    """Multiply–accumulates of one time step of one row: 4H × (input + H) per layer and direction."""
    macs = 0
    for layer in range(layers):
        layer_input = input_dim if layer == 0 else hidden_dim * directions
        macs += directions * 4 * hidden_dim * (layer_input + hidden_dim)
    return macs


def _encoder_macs(encoder: LSTMEncoder, lengths: torch.Tensor) -> int:
    """The LSTM over BOS w_1 .. w_n EOS (``lengths`` tokens each) and the (mean, logvar) layer."""
    lstm = encoder.lstm
    per_token = _lstm_macs_per_step(lstm.input_size, lstm.hidden_size, lstm.num_layers, encoder.directions)
    return (
        per_token * int(lengths.sum()) + len(lengths) * encoder.to_params.in_features * encoder.to_params.out_features
    )


def _decoder_macs(decoder, num_sentences: int, num_targets: int) -> int:
    """Decoder and output layer over the ``num_targets`` real decoder inputs (BOS w_1 .. w_n)."""
    vocab_size, width = decoder.output.out_features, decoder.output.in_features
    if isinstance(decoder, LSTMDecoder):
        lstm = decoder.lstm
        per_token = _lstm_macs_per_step(lstm.input_size, lstm.hidden_size, lstm.num_layers)
        per_sentence = decoder.z_to_cell.in_features * decoder.z_to_cell.out_features if decoder.z_to_cell else 0
    elif isinstance(decoder, DilatedCNNDecoder):
        project = decoder.project_in
        per_token = project.in_features * project.out_features
        per_token += sum(
            block.conv.kernel_size[0] * block.conv.in_channels * block.conv.out_channels for block in decoder.blocks
        )
        per_sentence = 0
    else:
        raise TextVAEError(f"no FLOP count for decoder {type(decoder).__name__}")
    return (per_token + width * vocab_size) * num_targets + per_sentence * num_sentences


def forward_macs(model, batch: Batch) -> int:
    """Multiply–accumulates of one forward pass of a sequence VAE on ``batch`` (real tokens only)."""
    lengths = batch.lengths.cpu()
    macs = _decoder_macs(model.decoder, len(lengths), int((lengths - 1).sum()))
    return macs + _encoder_macs(model.encoder, lengths)


def train_flops(model, batch: Batch) -> int:
    """FLOPs of one training step of a sequence VAE (LSTM encoder; LSTM or dilated-CNN decoder).

    Convention: 2 × the multiply–accumulates (MACs) of every matrix product of the forward pass,
    ×3 for forward + backward: the backward pass of Y = X W forms ∂L/∂X = ∂L/∂Y Wᵀ and
    ∂L/∂W = Xᵀ ∂L/∂Y, each as large as the forward product. Counted on the real tokens only
    (a sentence of n words has n + 2 encoder inputs, BOS … EOS, and n + 1 decoder inputs and
    targets); elementwise work, embedding lookups, bias additions and the optimizer are not
    counted. MACs per token, with E embedding, H hidden, D latent, V vocabulary:

        encoder LSTM, per encoder input     4H (E + H)          (per layer: 4H (input + H))
        decoder LSTM, per target            4H (E + D + H)      (z joins every input)
        output layer, per target            H V
        per sentence                        2D H (mean, logvar) + D H (c0 = W z)

    The PTB model (E 256, H 512, D 32, V 10,002): 1,572,864 + 1,638,400 + 5,121,024 MACs, so
    ≈ 8.33 M MACs ≈ 50.0 MFLOP per target token (plus one encoder input per sentence). A dilated
    CNN decoder of width C counts (E + D) C for its input projection and k C² per block.

    ``torch.utils.flop_counter.FlopCounterMode`` counts the same number (``tests/test_bench.py``)
    except for one product: the encoder's first recurrent step multiplies h_0 = 0, a constant,
    so autograd never forms its input gradient: 2 · 4H · H FLOPs per sentence and layer fewer.
    """
    return 6 * forward_macs(model, batch)


def iw_flops(model, batch: Batch, num_samples: int) -> int:
    """FLOPs (2 × MACs) of the toolkit's IW-NLL on ``batch`` with K = ``num_samples``, forward only.

    The encoder once per sentence; the decoder's embedding-side input projection 4H·E once per
    real input token, shared by the K samples; per sample, z's input projection 4H·D and c0 = W z
    once (not per token); per sample and real token, the recurrence 4H·H (and upper layers) and
    the output layer H·V. This is the work the shared-projection algorithm does; the naive one
    (every sample through the whole decoder) does 4H·(E + D) more per sample and token.
    """
    decoder = model.decoder
    if not isinstance(decoder, LSTMDecoder):
        raise TextVAEError("the IW FLOP count is for the LSTM decoder")
    lengths = batch.lengths.cpu()
    num_targets, num_sentences = int((lengths - 1).sum()), len(lengths)
    lstm, hidden = decoder.lstm, decoder.hidden_dim
    embed_dim = decoder.embedding.embedding_dim
    latent_in = decoder.latent_dim if decoder.z_concat_input else 0
    per_sample_token = _lstm_macs_per_step(lstm.input_size, hidden, lstm.num_layers) - 4 * hidden * (
        embed_dim + latent_in
    )
    per_sample_token += hidden * decoder.output.out_features
    per_sample = 4 * hidden * latent_in + (
        decoder.z_to_cell.in_features * decoder.z_to_cell.out_features if decoder.z_to_cell else 0
    )
    macs = _encoder_macs(model.encoder, lengths) + 4 * hidden * embed_dim * num_targets
    macs += num_samples * (per_sample * num_sentences + per_sample_token * num_targets)
    return 2 * macs
