"""Typed, frozen configuration and TOML recipe loading with strict keys.

A recipe is a TOML file with the tables ``[data]``, ``[model]``, ``[train]``, ``[eval]``, an
optional ``[reference]`` (the paper's number this recipe reproduces) and any number of
``[[remedies]]`` (posterior-collapse remedies; listed = on). It may name one ``base``
recipe (a path relative to itself); its tables are merged over the base key by key. Command-line
overrides (``--set train.lr=3e-4``) are merged last. Every key is checked against the dataclass
fields below or, for ``[model]``, against the registered constructor's signature.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

from textvae import components, registry  # noqa: F401 - importing components registers the built-in ones
from textvae.errors import TextVAEError
from textvae.verdicts import check_reference

_AT_LEAST_ONE = (lambda v: v >= 1, "≥ 1")
_NON_NEGATIVE = (lambda v: v >= 0, "≥ 0")
_POSITIVE = (lambda v: v > 0, "> 0")


def _check_ranges(cfg, rules: Mapping[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Raise a one-line error for the first field outside its range; None (= off) is always allowed."""
    for name, (ok, rule) in rules.items():
        value = getattr(cfg, name)
        if value is not None and not ok(value):
            raise TextVAEError(f"{name}: must be {rule}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which corpus, and how it becomes token ids.

    ``dataset`` names a corpus: ``bible`` (embedded, offline), ``ptb`` (Mikolov files in ``root``)
    or ``files`` (``root/{train,valid,test}.txt``). Lines are whitespace-tokenized; a line
    ``label<TAB>text`` keeps only the text. The words then become ids through ``tokenizer``: a word
    vocabulary, sentencepiece subwords, or a pretrained Hugging Face tokenizer (the pieces a
    pretrained model was trained on, ids unchanged). ``max_len`` always counts words.
    """

    dataset: str = "bible"
    root: str | None = None  # directory holding the split files (ptb, files)
    max_vocab_size: int | None = None  # most frequent words kept, specials not counted
    min_freq: int = 1  # words seen fewer times in train become unk
    max_len: int | None = None  # words per sentence, before BOS/EOS; longer ones are truncated
    lowercase: bool = False
    cache_dir: str | None = None  # Hugging Face datasets cache; None = its default
    vocab_file: str | None = None  # one word per line, used instead of building from train (He et al.'s Yahoo)
    # sentencepiece: subwords trained on the train split; pretrained: the tokenizer in pretrained_tokenizer
    tokenizer: Literal["word", "sentencepiece", "pretrained"] = "word"
    subword_model: Literal["unigram", "bpe"] = "unigram"  # sentencepiece's model type
    subword_vocab_size: int = 8000  # pieces incl. the 4 specials (an upper bound on small corpora)
    pretrained_tokenizer: str | None = None  # a local Hugging Face tokenizer directory (tokenizer = "pretrained")

    def __post_init__(self):
        counts = ("max_vocab_size", "min_freq", "max_len", "subword_vocab_size")
        _check_ranges(self, dict.fromkeys(counts, _AT_LEAST_ONE))
        if self.tokenizer == "pretrained":
            self._check_pretrained_tokenizer()
        elif self.pretrained_tokenizer is not None:
            raise TextVAEError('pretrained_tokenizer: is read only with tokenizer = "pretrained"')
        if self.tokenizer == "sentencepiece":
            for key in ("vocab_file", "max_vocab_size"):
                if getattr(self, key) is not None:
                    raise TextVAEError(
                        f"[data].{key} is for word vocabularies; with sentencepiece set subword_vocab_size"
                    )
            if self.min_freq != 1:
                raise TextVAEError(
                    "[data].min_freq is for word vocabularies; with sentencepiece set subword_vocab_size"
                )

    def _check_pretrained_tokenizer(self) -> None:
        """The vocabulary is the tokenizer's: no key that builds or trains one may be set."""
        if self.pretrained_tokenizer is None:
            raise TextVAEError(
                'pretrained_tokenizer: tokenizer = "pretrained" needs a local Hugging Face tokenizer directory here'
            )
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key in ("vocab_file", "max_vocab_size", "min_freq", "subword_model", "subword_vocab_size"):
            if getattr(self, key) != defaults[key]:
                raise TextVAEError(
                    f"{key}: does not apply to tokenizer = 'pretrained' (the tokenizer's vocabulary is fixed)"
                )


@dataclass(frozen=True)
class TrainConfig:
    """The training loop. SGD defaults follow He et al. 2019 (lr 1.0, clip 5, halve on plateau)."""

    seed: int = 0
    # the seed of the batch order alone (shuffled buckets, each epoch); None = ``seed``. Seed replicates
    # that share it see the same batches (and may train as one fused model, ``textvae ablate --fuse``)
    data_seed: int | None = None
    batch_size: int = 32
    # shuffled batches of similar lengths: sentences sorted by length within pools of this many
    # batches; None = one pool, the whole split (least padding, He et al. 2019)
    bucket_pool_batches: int | None = None
    epochs: int = 100
    max_steps: int | None = None  # stop after this many optimizer steps (whatever the epoch)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0  # max global gradient norm; None = no clipping
    lr_decay_factor: float = 0.5  # lr multiplier when validation loss stops improving
    lr_decay_patience: int = 2  # epochs without improvement before the lr decays
    max_lr_decays: int = 5  # stop after this many decays (He et al. 2019)
    reload_best_on_decay: bool = True  # restart from the best weights when the lr decays
    early_stop_patience: int | None = None  # stop after this many epochs without improvement
    validate_every_steps: int | None = None  # extra validations inside an epoch
    max_valid_sentences: int | None = None  # seeded subset used for validation during training
    log_every_steps: int = 50
    checkpoint_every_steps: int | None = 500  # `last.pt` also inside an epoch, for --resume
    progress_bar: bool = True
    # torch intra-op threads; None = torch's default (all cores), except in an ablation row: one
    # (textvae.engine.machine.ROW_THREADS). The thread count changes the float rounding, not the maths
    threads: int | None = None
    max_nonfinite_in_a_row: int = 10  # stop when this many batches in a row give a non-finite loss or gradient
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: this process's GPU if CUDA is available
    tensorboard: bool = False  # also write metrics.jsonl's records as TensorBoard scalars (pip install tensorboard)
    # a wall-clock cap on this run's training (a runtime key): the run stops at the first step past it, is
    # validated and marked finished, and its metrics.jsonl says it stopped on time, not on its stopping rule
    max_minutes: float | None = None
    # the training step captured as CUDA graphs (textvae.cuda.graph_cache): "auto" = on for a CUDA device when the
    # recipe's parts support it (single process, a strategy and model that capture), true = on (an error where
    # it cannot be), false = the uncaptured step
    cuda_graphs: bool | Literal["auto"] = "auto"

    def __post_init__(self):
        counts = ("batch_size", "epochs", "max_steps", "early_stop_patience", "validate_every_steps")
        counts += ("max_valid_sentences", "log_every_steps", "checkpoint_every_steps", "threads")
        counts += ("max_nonfinite_in_a_row", "bucket_pool_batches")
        rules = {
            **dict.fromkeys(counts, _AT_LEAST_ONE),
            **dict.fromkeys(("seed", "data_seed", "momentum", "weight_decay"), _NON_NEGATIVE),
            **dict.fromkeys(("lr_decay_patience", "max_lr_decays"), _NON_NEGATIVE),
            **dict.fromkeys(("lr", "grad_clip", "max_minutes"), _POSITIVE),
            "lr_decay_factor": (lambda v: 0 < v < 1, "in (0, 1)"),  # ReduceLROnPlateau needs a factor < 1
        }
        _check_ranges(self, rules)


@dataclass(frozen=True)
class EvalConfig:
    """Defaults for ``textvae eval``; each can be overridden on its command line."""

    split: Literal["valid", "test"] = "test"
    iw_samples: int = 500  # K in Burda et al. 2015; He et al. 2019 use 500
    iw_chunk_size: int = 100  # samples per decoder pass; memory is bounded by this, not by K
    batch_size: int = 32  # sentences per encoder pass
    max_sentences: int | None = None  # a seeded subset of the split; None = all of it
    seed: int = 0
    mi_samples: int = 1  # z draws per sentence for MI (its noise falls as 1/sqrt); 1 = He et al. 2019's protocol
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: the GPU when CUDA is available (a runtime key)
    # the checkpoint an ablation row is evaluated at: best.pt (the best validation loss) or last.pt (the
    # end of a fixed budget: a β < 1 row's validation ELBO can stop improving while its z keeps learning)
    checkpoint: Literal["best", "last"] = "best"

    def __post_init__(self):
        counts = ("iw_samples", "iw_chunk_size", "batch_size", "max_sentences", "mi_samples")
        _check_ranges(self, {**dict.fromkeys(counts, _AT_LEAST_ONE), "seed": _NON_NEGATIVE})


@dataclass(frozen=True)
class ReferenceConfig:
    """The published row a recipe reproduces: paper, table, row, the tag of ../shared/papers.md, and
    expected values with their tolerance or the published finding as checks (``textvae.verdicts``)."""

    paper: str = ""
    table: str = ""
    row: str = ""
    tag: str = ""  # how the published value was verified: V-text, V-code, V-2nd, V-calc
    expected: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)  # reproduced: |measured − expected| ≤ tolerance
    expect: tuple[str, ...] = ()  # the published finding as checks that hold at any budget, e.g. "kl < 0.1"
    expect_at_convergence: tuple[str, ...] = ()  # checks that hold only once a run reached its stopping rule
    finding: str = ""  # that finding in words
    dataset: str = ""  # the paper's data; published values compare only to rows trained on it
    epochs: int | None = None  # the paper's training budget; rows with less are not comparable
    notes: str = ""

    def __post_init__(self):
        check_reference(self)


@dataclass(frozen=True)
class Recipe:
    data: DataConfig
    model: dict[str, Any]  # a validated "model" component table
    remedies: tuple[dict[str, Any], ...]  # validated "remedy" component tables, in recipe order
    strategy: dict[str, Any]  # a validated "strategy" component table (how a training step works)
    train: TrainConfig
    eval: EvalConfig
    reference: ReferenceConfig
    source: str  # the recipe file it came from

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (saved with every run and checkpoint)."""
        return {
            "data": dataclasses.asdict(self.data),
            "model": self.model,
            "remedies": list(self.remedies),
            "strategy": self.strategy,
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
            "reference": dataclasses.asdict(self.reference),
            "source": self.source,
        }


_SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig, "reference": ReferenceConfig}
_TOP_LEVEL = ["base", "description", "data", "model", "remedies", "strategy", "train", "eval", "reference"]


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Load a recipe file (following ``base``), apply ``--set`` overrides, validate every key."""
    path = Path(path)
    raw = read_recipe_tables(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return recipe_from_dict(raw, source=str(path))


def read_recipe_tables(path: str | Path) -> dict[str, Any]:
    """A recipe file's tables with its ``base`` chain merged in, not yet validated."""
    return _read_with_bases(Path(path), seen=())


def recipe_from_dict(raw: Mapping[str, Any], source: str) -> Recipe:
    """Validate plain data (a parsed recipe, or the ``config`` saved in a run) into a Recipe."""
    raw = dict(raw)
    raw.pop("base", None)
    raw.pop("description", None)
    raw.pop("source", None)
    unknown = sorted(set(raw) - set(_TOP_LEVEL))
    if unknown:
        raise TextVAEError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(_TOP_LEVEL)}")
    sections = {name: _dataclass_from(cls, raw.get(name, {}), f"{source}: [{name}]") for name, cls in _SECTIONS.items()}
    if "model" not in raw:
        raise TextVAEError(f"{source}: missing [model] table; model types: {', '.join(registry.names('model'))}")
    model = registry.validate("model", raw["model"], f"{source}: [model]")
    remedy_tables = raw.get("remedies", [])
    if not isinstance(remedy_tables, list):
        raise TextVAEError(f"{source}: 'remedies' must be an array of tables ([[remedies]])")
    remedies = tuple(
        registry.validate("remedy", table, f"{source}: [[remedies]] #{i + 1}") for i, table in enumerate(remedy_tables)
    )
    strategy = registry.validate("strategy", raw.get("strategy", {"type": "standard"}), f"{source}: [strategy]")
    return Recipe(model=model, remedies=remedies, strategy=strategy, source=source, **sections)


def _dataclass_from(cls: type, table: Any, where: str):
    if not isinstance(table, Mapping):
        raise TextVAEError(f"{where}: expected a table, got {type(table).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise TextVAEError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(names)}")
    values = {k: registry.check_value(v, hints[k], f"{where}.{k}") for k, v in table.items()}
    try:
        return cls(**values)
    except TextVAEError as err:  # a value out of range: "field: must be ..."
        raise TextVAEError(f"{where}.{err}") from None


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in seen:
        raise TextVAEError(f"{path}: 'base' chain loops back to itself")
    raw = read_toml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise TextVAEError(f"{path}: 'base' must be a path string, got {type(base).__name__}")
    merged = _read_with_bases(path.parent / base, (*seen, resolved))
    if "paper" in raw.get("reference", {}):  # a recipe naming its own published row inherits none of its base's
        merged.pop("reference", None)
    deep_merge(merged, raw)
    return merged


def read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TextVAEError(f"{path}: recipe file not found") from None
    except IsADirectoryError:
        raise TextVAEError(f"{path}: is a directory, expected a recipe .toml file") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise TextVAEError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise TextVAEError(f"{path}: invalid TOML: {err}") from None


def deep_merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            # a component table that names a new type starts afresh: the base's keys belong to another type
            if "type" in value and value["type"] != into[key].get("type"):
                into[key] = dict(value)
            else:
                deep_merge(into[key], value)
        else:
            into[key] = value


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply ``section.key=value``; the value is read as a TOML value, else taken as a string."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise TextVAEError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    parts = key.strip().split(".")
    table = raw
    for part in parts[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise TextVAEError(f"--set {assignment!r}: {part!r} is not a table")
    table[parts[-1]] = value
