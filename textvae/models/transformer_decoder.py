"""A GPT-2-architecture causal Transformer decoder p(x|z), with z injected as in Optimus (Li et al. 2020).

The network is ``transformers.GPT2LMHeadModel`` (Radford et al. 2019: pre-LayerNorm blocks of
masked self-attention and an MLP, learned positions, output layer tied to the input embedding),
built from a ``GPT2Config`` with textvae's vocabulary size (random initialization), or loaded
from a local directory of pretrained weights (``pretrained``), whose tokenizer the data must then
use: ``[data] tokenizer = "pretrained"``, ``pretrained_tokenizer`` = that directory.

z reaches it two ways (Li et al. 2020, §3.2; both by default, as Optimus does):

- ``z_memory``: z becomes one extra key/value slot in every layer's self-attention,
  [k_l; v_l] = W_l z (a per-layer projection, split into heads), placed before the sentence as a
  cached past (``past_key_values``): every position attends to it. Optimus uses one vector as both
  key and value; here each has its own projection (the more general form).
- ``z_embedding``: h_0,t = e(x_t) + p_t + W_e z — z projected and added to every input embedding.

The memory slot has no position: the tokens keep positions 0, 1, ... as in the pretrained model.
Attention is causal: position t sees the memory and positions ≤ t. Batches are padded after the
last real token, so causality alone keeps padding out of every real position's attention (a
padded position's output is never scored: the sequence NLL masks it).

Generation (``step``) carries the key/value cache (a ``transformers`` ``DynamicCache`` holding the
memory slot and the tokens so far): a new token costs one position per layer, and gives exactly
what the full forward pass gives. ``reorder_state`` selects its rows for beam search.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.models.transformer_encoder import quiet_transformers, resolve_pretrained
from textvae.registry import register

log = logging.getLogger(__name__)


@dataclass
class DecoderState:
    """The key/value cache of every layer (memory slot first, then the tokens fed so far), and how many
    tokens have been fed (the next token's position)."""

    cache: object  # transformers DynamicCache, keys and values (B, heads, slots, head_dim) per layer
    position: int


@register("decoder", "gpt2", context=("vocab_size", "latent_dim", "pad_id", "vocab"))
class GPT2Decoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        latent_dim: int,
        pad_id: int,
        vocab: Vocab | None = None,
        num_layers: int = 4,
        hidden_dim: int = 256,
        num_heads: int = 4,
        inner_dim: int | None = None,  # the MLP's width; None: 4 · hidden_dim (GPT-2)
        max_positions: int = 128,  # longest input (BOS + words) the position table covers
        dropout: float = 0.1,  # GPT-2's one rate, on embeddings, attention weights and residual branches
        z_memory: bool = True,
        z_embedding: bool = True,
        pretrained: str | None = None,  # a local directory of GPT-2 weights; the fields above must match it
    ):
        super().__init__()
        where = "model.decoder"
        if latent_dim > 0 and not (z_memory or z_embedding):
            raise TextVAEError(f"{where}: z reaches the decoder through z_memory, z_embedding or both; both are off")
        if num_layers < 1 or num_heads < 1 or hidden_dim < 1 or max_positions < 2:
            raise TextVAEError(f"{where}: num_layers, num_heads, hidden_dim must be ≥ 1 and max_positions ≥ 2")
        if hidden_dim % num_heads:
            raise TextVAEError(f"{where}: hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        if not 0 <= dropout < 1:
            raise TextVAEError(f"{where}: dropout must be in [0, 1), got {dropout}")
        transformers = quiet_transformers()
        config = transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=max_positions,
            n_embd=hidden_dim,
            n_layer=num_layers,
            n_head=num_heads,
            n_inner=inner_dim,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            pad_token_id=pad_id,
            bos_token_id=None,  # textvae's BOS/EOS are fed and stopped on by textvae, not by transformers
            eos_token_id=None,
            use_cache=False,
        )
        self.pretrained_dir = None
        if pretrained is not None:
            self.pretrained_dir = resolve_pretrained(pretrained, f"{where}.pretrained")
            _check_pretrained(self.pretrained_dir, config, vocab, where)
        self.config = config
        self.gpt2 = self._fresh_network()
        self.latent_dim = latent_dim
        self.num_layers, self.num_heads = num_layers, num_heads
        self.head_dim = hidden_dim // num_heads
        self.max_positions = max_positions
        self.z_memory = z_memory and latent_dim > 0
        self.z_embedding = z_embedding and latent_dim > 0
        self.z_to_memory = nn.Linear(latent_dim, num_layers * 2 * hidden_dim) if self.z_memory else None
        self.z_to_embedding = nn.Linear(latent_dim, hidden_dim, bias=False) if self.z_embedding else None
        self._init_latent_projections()
        log.info(
            "GPT-2 decoder: %d layers, width %d, %d heads, %.2fM parameters, %s, z as %s",
            num_layers,
            hidden_dim,
            num_heads,
            sum(p.numel() for p in self.parameters()) / 1e6,
            f"pretrained from {self.pretrained_dir}" if self.pretrained_dir else "random initialization",
            " and ".join(n for n, on in (("memory", self.z_memory), ("embedding", self.z_embedding)) if on)
            or "nothing",
        )

    def _fresh_network(self) -> nn.Module:
        transformers = quiet_transformers()
        if self.pretrained_dir is None:
            return transformers.GPT2LMHeadModel(self.config)
        config = self.config
        return (
            transformers.GPT2LMHeadModel.from_pretrained(  # the architecture is the directory's; dropout the recipe's
                self.pretrained_dir,
                local_files_only=True,
                use_cache=False,
                pad_token_id=config.pad_token_id,
                resid_pdrop=config.resid_pdrop,
                embd_pdrop=config.embd_pdrop,
                attn_pdrop=config.attn_pdrop,
            )
        )

    def _init_latent_projections(self) -> None:
        """N(0, 0.02²) weights and zero biases, GPT-2's initialization."""
        for layer in (self.z_to_memory, self.z_to_embedding):
            if layer is not None:
                nn.init.normal_(layer.weight, std=self.config.initializer_range)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def reinitialize(self) -> None:
        """Fresh weights, as at construction: a new random network, or the pretrained weights reloaded
        (Li et al. 2019 reset the decoder after pretraining)."""
        self.gpt2.load_state_dict(self._fresh_network().state_dict())
        self._init_latent_projections()

    def _memory(self, z: Tensor | None, batch_size: int):
        """A cache holding one key/value slot per layer computed from z, (B, heads, 1, head_dim) each;
        None without ``z_memory``."""
        from transformers import DynamicCache

        if not self.z_memory:
            return None
        slots = self.z_to_memory(z).view(batch_size, self.num_layers, 2, self.num_heads, 1, self.head_dim)
        return DynamicCache([(slots[:, layer, 0], slots[:, layer, 1]) for layer in range(self.num_layers)])

    def _inputs(self, tokens: Tensor, z: Tensor | None) -> Tensor:
        embedded = self.gpt2.transformer.wte(tokens)  # (B, T, H)
        if self.z_embedding:
            embedded = embedded + self.z_to_embedding(z).unsqueeze(1)  # (B, T, H)
        return embedded

    @staticmethod
    def _causal_mask(query_len: int, past_len: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Additive mask (1, 1, T, P + T): new position t sees the P cached slots and new positions ≤ t."""
        queries = torch.arange(query_len, device=device).unsqueeze(1) + past_len  # (T, 1)
        keys = torch.arange(past_len + query_len, device=device).unsqueeze(0)  # (1, P + T)
        blocked = keys > queries  # (T, P + T)
        return torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)[
            None, None
        ]

    def _run(self, tokens: Tensor, z: Tensor | None, cache, past_len: int, first_position: int) -> Tensor:
        """The Transformer on new ``tokens`` (B, T) after ``past_len`` cached slots: last hidden states (B, T, H)."""
        batch_size, length = tokens.shape
        if first_position + length > self.max_positions:
            raise TextVAEError(
                f"the GPT-2 decoder covers {self.max_positions} positions, asked for {first_position + length}: "
                "raise model.decoder.max_positions or lower data.max_len / the generation length"
            )
        embedded = self._inputs(tokens, z)
        positions = torch.arange(first_position, first_position + length, device=tokens.device).expand(batch_size, -1)
        mask = self._causal_mask(length, past_len, embedded.dtype, tokens.device)
        output = self.gpt2.transformer(
            None,  # the cache is GPT2Model.forward's second parameter (past_key_values, renamed cache in 5.x)
            cache,
            attention_mask=mask,
            position_ids=positions,
            inputs_embeds=embedded,
            use_cache=False,  # the cache object is updated in place either way
        )
        return output.last_hidden_state  # (B, T, H)

    def forward(self, tokens: Tensor, z: Tensor | None) -> Tensor:
        """Hidden states (B, T, H) for decoder inputs ``tokens`` (B, T); causal in T."""
        memory = self._memory(z, tokens.shape[0])
        return self._run(tokens, z, memory, 0 if memory is None else 1, 0)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.gpt2.lm_head(hidden)  # (..., V)

    def initial_state(self, z: Tensor | None, batch_size: int) -> DecoderState:
        """The cache with z's memory slot in every layer (empty without ``z_memory``), no token fed yet."""
        from transformers import DynamicCache

        memory = self._memory(z, batch_size)
        return DecoderState(DynamicCache() if memory is None else memory, 0)

    def step(self, tokens: Tensor, state: DecoderState, z: Tensor | None) -> tuple[Tensor, DecoderState]:
        """One generation step: ``tokens`` (B,) → next-token logits (B, V) and the grown cache."""
        past_len = state.cache.get_seq_length()
        hidden = self._run(tokens.unsqueeze(1), z, state.cache, past_len, state.position)  # (B, 1, H)
        return self.logits(hidden[:, 0]), DecoderState(state.cache, state.position + 1)

    def reorder_state(self, state: DecoderState, index: Tensor) -> DecoderState:
        """Select batch rows of the cache (beam search)."""
        state.cache.reorder_cache(index)
        return state


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _check_pretrained(directory, config, vocab: Vocab | None, where: str) -> None:
    """The recipe's architecture and vocabulary must be the pretrained model's; a one-line error otherwise.

    With the vocabulary at hand and a tokenizer in the directory, the tokens are compared one by one;
    otherwise only their number can be. The data pipeline gives the model's vocabulary with
    ``[data] tokenizer = "pretrained"`` and ``pretrained_tokenizer`` = the directory (or a copy of its
    tokenizer): the error says so."""
    transformers = quiet_transformers()
    saved = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    if saved.model_type != "gpt2":
        raise TextVAEError(f"{where}.pretrained: {directory} holds a {saved.model_type!r} model, not GPT-2")
    fields = {
        "num_layers": ("n_layer", config.n_layer),
        "hidden_dim": ("n_embd", config.n_embd),
        "num_heads": ("n_head", config.n_head),
        "max_positions": ("n_positions", config.n_positions),
        "inner_dim": ("n_inner", config.n_inner),
    }
    for name, (key, wanted) in fields.items():
        if getattr(saved, key) != wanted:
            raise TextVAEError(
                f"{where}.{name} = {wanted} but the pretrained model in {directory} has {getattr(saved, key)}"
            )
    use_its_tokenizer = f'set [data] tokenizer = "pretrained" and pretrained_tokenizer = "{directory}"'
    if saved.vocab_size != config.vocab_size and vocab is not None and not vocab.is_pretrained:
        kind = "sentencepiece" if vocab.is_subword else "word"
        raise TextVAEError(
            f"{where}.pretrained: the model in {directory} reads the ids of its own tokenizer "
            f"({saved.vocab_size} tokens), not those of a textvae {kind} vocabulary; {use_its_tokenizer}"
        )
    if saved.vocab_size != config.vocab_size:
        raise TextVAEError(
            f"{where}.pretrained: the model in {directory} has {saved.vocab_size} tokens, the textvae vocabulary "
            f"{config.vocab_size}: the decoder's vocabulary must be the model's tokenizer; {use_its_tokenizer}"
        )
    if vocab is None:
        return
    # without tokenizer files transformers 5 still builds a GPT-2 tokenizer, an empty one: not this model's
    has_tokenizer = any((directory / name).is_file() for name in _TOKENIZER_FILES)
    try:
        tokenizer = (
            transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True) if has_tokenizer else None
        )
    except (OSError, ValueError):
        tokenizer = None
    if tokenizer is None:
        log.warning("%s has no tokenizer: only the vocabulary size (%d) was checked", directory, len(vocab))
        return
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(vocab))))
    for index, (theirs, ours) in enumerate(zip(tokens, vocab.words, strict=True)):
        if theirs != ours:
            raise TextVAEError(
                f"{where}.pretrained: token {index} is {theirs!r} in {directory}'s tokenizer but {ours!r} in the "
                f"textvae vocabulary: the decoder's vocabulary must be the model's tokenizer; {use_its_tokenizer}"
            )
