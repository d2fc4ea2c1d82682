"""Decoders at equal width: training tokens/s and FLOP/s of the LSTM decoder and of each
dilated-CNN preset (Yang et al. 2017)."""

from __future__ import annotations

from textvae.models.cnn_decoder import PRESETS

from .clock import Clock
from .corpus import Corpus, train_batches
from .flops import train_flops
from .models import Sizes, optimizer_for, seeded_model, vae_spec
from .training import toolkit_steps


def bench_decoders(clock: Clock, corpus: Corpus, sizes: Sizes) -> dict:
    """Training tokens/s and FLOP/s of the LSTM decoder and each dilated-CNN preset at equal width."""
    device = clock.device
    batches = train_batches(corpus, sizes, sizes.cnn_steps, device)
    tokens = sum(b.num_target_tokens for b in batches)
    decoders = {"lstm": {"type": "lstm", "embed_dim": sizes.embed_dim, "hidden_dim": sizes.cnn_width}}
    for preset in PRESETS:
        decoders[preset] = {
            "type": "dilated_cnn",
            "preset": preset,
            "embed_dim": sizes.embed_dim,
            "channels": sizes.cnn_width,
        }
    runs, flops = {}, {}
    for name, decoder in decoders.items():
        model = seeded_model(vae_spec(sizes, decoder, sizes.cnn_encoder_hidden), corpus.vocab, device)
        flops[name] = sum(train_flops(model, b) for b in batches)
        runs[name] = toolkit_steps(model, optimizer_for(model, "adam"), batches)
    best = clock.interleaved(runs, sizes.rounds)
    return {
        name: {
            "tokens_per_s": tokens / best[name],
            "gflops": flops[name] / best[name] / 1e9,
            "flops_per_token": flops[name] / tokens,
        }
        for name in decoders
    }
