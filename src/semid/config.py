"""Run configuration: params.yaml -> profile overlay -> frozen, validated dataclasses.

Precedence, lowest first:

1. ``params.yaml`` holds every key, with the embedded (CPU, offline) defaults.
2. ``profiles/<base.profile>.yaml`` (when ``base.profile`` is not ``embedded``) overlays the keys
   it names. DVC tracks the profile files as params too, so editing one reruns what reads it.
3. ``dvc exp run -S key=value`` edits params.yaml; for a key that the active profile sets,
   edit the profile instead: ``-S profiles/paper.yaml:generator.epochs=1``.

Every section is validated when loaded, so a bad value fails in the first second with a
message naming the key, the value and the valid choices.
"""

from __future__ import annotations

import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from semid.distributed import check_batch_split
from semid.quantize import QuantizeError, check_power_of_two
from semid.quantize.options import build_options
from semid.schema import ConfigError, build_section, check_choice, check_range

EMBEDDED_PROFILE = "embedded"

# The grid axes. Names only: the registries in semid.embed / semid.quantize map them to code,
# and a test keeps the two in step, so loading params never imports torch.
EMBEDDING_METHODS = ("content", "search", "rec", "multitask", "concat", "svd", "separate", "prefix_share")
QUANTIZERS = ("rqkmeans", "rqvae", "rqvae_naive", "dictlearn", "rlfq")
# Quantizers whose codes are bit strings, so quantize.codebook_size must be a power of two
# (semid.quantize.check_power_of_two; a test keeps this list in step with the classes).
POWER_OF_TWO_QUANTIZERS = ("rqkmeans", "rlfq")
SEED_LIMIT = 2**32  # base.seed < this: NumPy's legacy seeding and pandas' random_state take 32 bits
# Query backends by name; semid.queries.BACKENDS maps them to classes (a test keeps them in step).
QUERY_BACKENDS = ("template", "gemini", "openai")
# MovieLens releases semid.data knows how to read (names only; a test keeps them in step).
RELEASES = ("ml-latest-small", "ml-latest", "ml-25m", "ml-32m", "ml-100k", "ml-1m")
LR_SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")


@dataclass(frozen=True)
class BaseConfig:
    seed: int = 42
    profile: str = EMBEDDED_PROFILE  # embedded | paper (profiles/<name>.yaml)
    # CPU threads of torch, FAISS (OpenMP) and BLAS in every stage. Pinned, never "all cores":
    # FAISS's residual k-means reduces in parallel, so its codes differ between 1 and 2 threads.
    threads: int = 2

    def validate(self) -> None:
        check_range("base.seed", self.seed, 0, SEED_LIMIT - 1)
        check_range("base.threads", self.threads, 1, 1024)


@dataclass(frozen=True)
class DataConfig:
    release: str = "ml-latest-small"  # ml-latest-small | ml-latest | ml-25m | ml-32m | ml-100k | ml-1m
    # Folder holding <release>/ with the extracted files (or <release>.zip). Empty: use the
    # SEMID_MOVIELENS_MIRROR environment variable, then the GroupLens download.
    mirror: str = ""
    verify_checksums: bool = True
    min_rating: float = 0.0  # ratings below this are not interactions (0: every rating counts)
    min_user_interactions: int = 5  # users with fewer are dropped (>= 3: train, valid, test)
    sample_users: int = 0  # 0 = all users; else a seeded random sample of this many
    sample_items: int = 0  # 0 = all items; else this many, picked by sample_items_strategy
    sample_items_strategy: str = "random"  # random | popular
    max_tags: int = 10  # user tags kept per item, most frequent first
    genome_top_k: int = 10  # genome tags kept per item (releases that ship the genome)
    genome_min_relevance: float = 0.5

    def validate(self) -> None:
        check_choice("data.release", self.release, RELEASES)
        check_range("data.min_user_interactions", self.min_user_interactions, 3)
        for key in ("sample_users", "sample_items", "max_tags", "genome_top_k"):
            check_range(f"data.{key}", getattr(self, key), 0)
        check_choice("data.sample_items_strategy", self.sample_items_strategy, ("random", "popular"))
        check_range("data.min_rating", self.min_rating, 0.0, 5.0)
        check_range("data.genome_min_relevance", self.genome_min_relevance, 0.0, 1.0)


@dataclass(frozen=True)
class QueriesConfig:
    backend: str = "template"  # template (offline stand-in) | gemini | openai (any compatible endpoint)
    model: str = "gemini-2.0-flash"  # remote backends only
    base_url: str = ""  # openai backend: "" = api.openai.com; e.g. http://localhost:8000/v1 (vLLM)
    # Environment variable holding the key; "" = GEMINI_API_KEY then GOOGLE_API_KEY (gemini),
    # OPENAI_API_KEY (openai, sent only to api.openai.com; another base_url gets no key unless
    # named here). Keys are read from the environment only, never from params.
    api_key_env: str = ""
    n_generated: int = 6  # queries asked per item (paper: 20); half are paraphrases of the other half
    n_train: int = 3  # taken from the front of the generated list (the originals)
    n_valid: int = 1  # taken just before the test queries
    n_test: int = 1  # taken from the end (paraphrases of the first queries)
    temperature: float = 1.0
    concurrency: int = 8  # requests in flight
    max_retries: int = 5  # per item, over rate limits, server errors, timeouts and invalid answers
    retry_base_seconds: float = 2.0  # backoff: uniform(0, base * 2**attempt), capped below
    retry_max_seconds: float = 60.0
    timeout_seconds: float = 60.0
    max_failure_rate: float = 0.01  # the stage fails when more items than this end without queries
    cache_dir: str = "data/cache/queries"  # answers JSONL, outside the DVC output (survives reruns)

    def validate(self) -> None:
        check_choice("queries.backend", self.backend, QUERY_BACKENDS)
        check_range("queries.n_generated", self.n_generated, 1, 100)
        check_range("queries.n_train", self.n_train, 1)
        check_range("queries.n_valid", self.n_valid, 0)
        check_range("queries.n_test", self.n_test, 1)
        used = self.n_train + self.n_valid + self.n_test
        if used > self.n_generated:
            raise ConfigError(
                f"queries.n_train + n_valid + n_test = {self.n_train} + {self.n_valid} + {self.n_test} = {used} "
                f"is more than queries.n_generated={self.n_generated}; raise n_generated or lower the splits"
            )
        check_range("queries.temperature", self.temperature, 0.0, 2.0)
        check_range("queries.concurrency", self.concurrency, 1, 256)
        check_range("queries.max_retries", self.max_retries, 0, 50)
        check_range("queries.retry_base_seconds", self.retry_base_seconds, 0.0)
        check_range("queries.retry_max_seconds", self.retry_max_seconds, 0.0)
        check_range("queries.timeout_seconds", self.timeout_seconds, 1.0)
        check_range("queries.max_failure_rate", self.max_failure_rate, 0.0, 1.0)
        if self.backend != "template" and not self.model:
            raise ConfigError(f"queries.model is empty; the {self.backend} backend needs a model name")
        if not self.cache_dir:
            raise ConfigError("queries.cache_dir is empty; name a folder for the answers cache")
        # params reach dvc.lock and MLflow: a secret in base_url would too (the message never repeats it).
        url = urlsplit(self.base_url)
        names = [name for name, _ in parse_qsl(url.query, keep_blank_values=True)]
        if url.username or url.password or any(re.search(r"key|token|secret|passw|sig|auth|cred", n, re.I) for n in names):
            raise ConfigError(
                "queries.base_url carries credentials (user:password@ or a key/token parameter); put the key in "
                "an environment variable and name it in queries.api_key_env"
            )


@dataclass(frozen=True)
class EmbedConfig:
    model: str = "all-MiniLM-L6-v2"  # a sentence-transformer name or local folder (semid.models)
    encode_batch_size: int = 64
    # Fine-tuning (search, multitask): max_steps > 0 wins over epochs, as in Hugging Face.
    epochs: float = 1.0
    max_steps: int = 100  # measured: ~3 min of MiniLM fine-tuning on 2 cores (README "train_embedder")
    max_minutes: float = 0.0  # a guard, not a budget: past it the fine-tune fails (0 = none)
    batch_size: int = 32  # in-batch negatives per step (the global batch: split across processes)
    lr: float = 5e-5
    checkpoint_steps: int = 50
    max_item_pairs: int = 50000  # co-interaction pairs for multitask
    # ENMF (rec)
    enmf_dim: int = 64
    enmf_epochs: int = 100
    enmf_batch_size: int = 256
    enmf_lr: float = 0.01
    enmf_negative_weight: float = 0.1
    enmf_dropout: float = 0.3
    svd_dim: int = 128  # common dimension of the svd fusion
    # Dense ceilings on the validation split
    eval_k: int = 30
    eval_max_queries: int = 2000
    # Processes of the bi-encoder fine-tune (DDP through torchrun, one per GPU; README "Several
    # GPUs"); each takes batch_size / processes of every batch. Only the fine-tune is split (search,
    # multitask and the fusions with search); rank 0 writes the outputs.
    processes: int = 1

    def validate(self) -> None:
        if not self.model:  # "" would resolve to the current folder
            raise ConfigError("embed.model is empty; give a sentence-transformer name or a local folder")
        for key in ("encode_batch_size", "batch_size", "enmf_dim", "enmf_epochs", "enmf_batch_size", "svd_dim",
                    "eval_k", "checkpoint_steps", "max_item_pairs", "eval_max_queries"):
            check_range(f"embed.{key}", getattr(self, key), 1)
        check_range("embed.max_steps", self.max_steps, 0)
        check_range("embed.epochs", self.epochs, 0.0)
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError(f"embed.max_steps={self.max_steps} and embed.epochs={self.epochs}: one must be > 0")
        for key in ("lr", "enmf_lr"):
            check_range(f"embed.{key}", getattr(self, key), 1e-8, 1.0)
        check_range("embed.enmf_negative_weight", self.enmf_negative_weight, 0.0, 1.0)
        check_range("embed.enmf_dropout", self.enmf_dropout, 0.0, 0.95)
        check_range("embed.max_minutes", self.max_minutes, 0.0)
        check_range("embed.processes", self.processes, 1, 1024)
        check_batch_split(self.batch_size, self.processes, "embed.batch_size", "embed.processes")


@dataclass(frozen=True)
class GeneratorConfig:
    # "scratch" = a small T5 from the config below with a tokenizer trained on our own texts;
    # else a T5 checkpoint name or local folder (paper: google/flan-t5-base).
    model: str = "scratch"
    # A scratch T5 reads text as the token states of this frozen pretrained encoder ("" = a text
    # vocabulary of its own, trained on our texts); the same base model at every grid point.
    text_encoder: str = "all-MiniLM-L6-v2"
    text_input: str = "pooled"  # pooled (the mean word-piece state) | tokens (one state per word piece)
    text_max_tokens: int = 64  # word pieces the text encoder reads (queries ~7; item texts are cut here)
    # ID-token embeddings start random, or at the projected mean text of their items' train queries
    id_embedding_init: str = "random"
    text_vocab_size: int = 2000  # scratch tokenizer's text pieces (ID tokens come on top)
    d_model: int = 128  # scratch T5: ~1.2M parameters
    d_ff: int = 512
    num_layers: int = 2
    num_decoder_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.0  # a few passes over the data: too few to overfit
    # Training examples
    history_length: int = 20  # rec input: IDs of the last H items
    rec_window_stride: int = 1  # every stride-th next-item window of a train history
    rec_max_windows_per_user: int = 100  # newest windows per user (0 = all); heavy raters would dominate otherwise
    rec_input_dedup: bool = False  # rec histories show the de-duplication level too (text encoder only)
    indexing_examples: bool = True  # DSI-style "item: <item text>" -> ID examples
    max_input_tokens: int = 128
    max_valid_examples: int = 1000  # validation loss on at most this many examples
    # Optimisation: max_steps > 0 wins over epochs, as in Hugging Face
    epochs: float = 3.0
    max_steps: int = 3000  # the budget: training ends here on every machine (~7 min on 2 idle cores)
    max_minutes: float = 0.0  # a guard, not a budget: past it the stage fails (0 = none)
    batch_size: int = 128  # the global batch of a step: split across processes
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    lr_schedule: str = "linear"  # any Hugging Face scheduler name: linear | cosine | constant_with_warmup ...
    group_by_length: bool = True  # batches of like input lengths (search ~8 positions, rec ~40)
    logging_steps: int = 50  # train loss points of the curve (metrics/train_t5_curve.csv, MLflow)
    eval_steps: int = 500  # valid loss every this many steps (0 = at the end only)
    save_steps: int = 250  # checkpoints in models/generator/checkpoints; a rerun resumes from the last
    bf16: bool = False  # on a GPU only
    # Training processes (DDP through torchrun, one per GPU; README "Several GPUs"); each takes
    # batch_size / processes of every batch, so steps and examples seen do not change.
    processes: int = 1

    def validate(self) -> None:
        for key in ("text_vocab_size", "d_model", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                    "history_length", "rec_window_stride", "max_input_tokens", "batch_size", "save_steps"):
            check_range(f"generator.{key}", getattr(self, key), 1)
        for key in ("rec_max_windows_per_user", "max_valid_examples", "max_steps", "warmup_steps"):
            check_range(f"generator.{key}", getattr(self, key), 0)
        check_range("generator.epochs", self.epochs, 0.0)
        # an input keeps its newest max_input_tokens - 1 positions (semid.generator.inputs)
        check_range("generator.max_input_tokens", self.max_input_tokens, 2)
        if self.d_model % self.num_heads:
            raise ConfigError(f"generator.d_model={self.d_model} must be a multiple of generator.num_heads={self.num_heads}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError(f"generator.max_steps={self.max_steps} and generator.epochs={self.epochs}: one must be > 0")
        check_range("generator.text_vocab_size", self.text_vocab_size, 100)
        check_range("generator.dropout", self.dropout, 0.0, 0.9)
        check_range("generator.learning_rate", self.learning_rate, 1e-8, 1.0)
        check_range("generator.weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("generator.max_minutes", self.max_minutes, 0.0)
        if not self.model:
            raise ConfigError("generator.model is empty; use 'scratch' or a T5 checkpoint name or folder")
        check_choice("generator.text_input", self.text_input, ("tokens", "pooled"))
        check_choice("generator.id_embedding_init", self.id_embedding_init, ("random", "query_centroids"))
        check_choice("generator.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_range("generator.logging_steps", self.logging_steps, 1)
        check_range("generator.text_max_tokens", self.text_max_tokens, 2)
        check_range("generator.eval_steps", self.eval_steps, 0)
        check_range("generator.processes", self.processes, 1, 1024)
        check_batch_split(self.batch_size, self.processes, "generator.batch_size", "generator.processes")


@dataclass(frozen=True)
class EvaluateConfig:
    search_queries: int = 5000  # seeded subsample of the test queries (0 = all)
    # The subsample's seed, apart from base.seed: every seed of a grid point is scored on the same
    # queries, which the paired tests of `make results` need.
    sample_seed: int = 42
    k: int = 30  # items returned per input
    num_beams: int = 30
    num_beam_groups: int = 1  # > 1: diverse (group) beam search; paper: 60 beams, 30 groups
    diversity_penalty: float = 0.0  # paper: 0.25
    constrained: bool = True  # decode over the trie of valid IDs only
    batch_size: int = 128  # inputs per decoding batch
    head_fraction: float = 0.01  # "head" = this top share of items by train interactions

    def validate(self) -> None:
        for key in ("k", "num_beams", "num_beam_groups", "batch_size"):
            check_range(f"evaluate.{key}", getattr(self, key), 1)
        check_range("evaluate.search_queries", self.search_queries, 0)
        check_range("evaluate.diversity_penalty", self.diversity_penalty, 0.0)
        check_range("evaluate.head_fraction", self.head_fraction, 0.0, 1.0)
        if self.num_beam_groups == 1 and self.num_beams < self.k:
            raise ConfigError(f"evaluate.num_beams={self.num_beams} must be >= evaluate.k={self.k}")
        if self.num_beam_groups > 1:
            if self.num_beams % self.num_beam_groups:
                raise ConfigError(
                    f"evaluate.num_beams={self.num_beams} must be a multiple of "
                    f"evaluate.num_beam_groups={self.num_beam_groups}"
                )
            if not self.constrained:
                raise ConfigError("evaluate.num_beam_groups > 1 needs evaluate.constrained=true")


@dataclass(frozen=True)
class QuantizeConfig:
    """The quantizer itself is the top-level axis `quantizer`; this section configures it."""

    levels: int = 2  # the paper's 2 x 256; README "quantize" has the measured alternatives
    codebook_size: int = 256  # power of two for rqkmeans and rlfq
    dedup: bool = True  # append a level numbering items that share a full code tuple
    neighbours: int = 10  # k of the neighbour-preservation diagnostic
    # Overrides of each quantizer's preset (src/semid/quantize/options.py); empty = the preset, e.g.
    # dvc exp run -S quantizer=rqvae_naive -S quantize.rqvae_naive.kmeans_init=true
    rqkmeans: dict = field(default_factory=dict)  # beam_size, kmeans_iters, normalize_input, refine_codebooks
    rqvae: dict = field(default_factory=dict)  # the fixed recipe; the same keys as rqvae_naive
    rqvae_naive: dict = field(default_factory=dict)  # kmeans_init, recon_loss, input_scaling, ... (README)
    dictlearn: dict = field(default_factory=dict)  # alpha, max_iter, batch_size
    rlfq: dict = field(default_factory=dict)  # input_scaling, entropy_loss_weight, steps, lr, ...

    def validate(self) -> None:
        check_range("quantize.levels", self.levels, 1, 8)
        check_range("quantize.codebook_size", self.codebook_size, 2, 65536)
        check_range("quantize.neighbours", self.neighbours, 1)
        for name in QUANTIZERS:
            build_options(name, getattr(self, name))

    def options(self, quantizer: str):
        """The options object of ``quantizer``: its preset with this section's overrides."""
        return build_options(quantizer, getattr(self, quantizer))


# Section name in params.yaml -> dataclass. Later stages register theirs here.
SECTIONS: dict[str, type] = {
    "base": BaseConfig,
    "data": DataConfig,
    "embed": EmbedConfig,
    "queries": QueriesConfig,
    "generator": GeneratorConfig,
    "evaluate": EvaluateConfig,
    "quantize": QuantizeConfig,
}
# Top-level scalar keys (the grid axes) -> their valid choices.
AXES: dict[str, tuple[str, ...]] = {
    "embedding": EMBEDDING_METHODS,
    "quantizer": QUANTIZERS,
}


@dataclass(frozen=True)
class Params:
    sections: dict[str, Any]
    embedding: str
    quantizer: str
    raw: dict[str, Any] = field(repr=False)  # the merged mapping, for logging

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def flat(self, keys: typing.Iterable[str] | None = None) -> dict[str, Any]:
        """Flat ``section.key -> value`` for the given top-level keys (all when None)."""
        wanted = set(self.raw) if keys is None else set(keys)
        return {k: v for k, v in _flatten(self.raw).items() if k.split(".", 1)[0] in wanted}


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def find_root(start: Path | None = None) -> Path:
    """The project root for what all runs share (MLflow store, answer caches): DVC_ROOT when DVC
    runs us, else the nearest folder with params.yaml.

    A queued experiment runs in a temporary copy (``.dvc/tmp/exps/...``) while DVC sets DVC_ROOT
    to the repo that queued it (dvc/repo/experiments/queue/base.py), so this is the main repo.
    Never read the run's own params through it: use :func:`workspace_root`.
    """
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    return workspace_root(start)


def workspace_root(start: Path | None = None) -> Path:
    """The folder this run works in: the nearest one with params.yaml or dvc.yaml above the cwd
    (in a queued experiment, its temporary copy with the experiment's params)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").exists() or (folder / "dvc.yaml").exists():
            return folder
    return here


def _set_dotted(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        mapping = mapping.setdefault(part, {})
    mapping[leaf] = value


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error
    (PyYAML keeps the last silently, so an edit above a forgotten duplicate would do nothing)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<:" merges; its keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            line = first_line.setdefault(key, key_node.start_mark.line)
        except TypeError:  # an unhashable key: construct_mapping names it
            continue
        if line != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {line + 1})", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A params or profile file as a mapping; any problem is one ConfigError line naming the file
    (and, for bad YAML, the line, the column and what is wrong there)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason})") from error
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path} line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = " ".join(part for part in (error.problem, error.context and f"({error.context})") if part)
        raise ConfigError(f"{where}: invalid YAML: {problem or 'unparsable'}".replace("\n", " ")) from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping of sections (base:, data:, ...), got a {type(data).__name__}: {data!r:.60}"
        )
    return data


def read_merged(params_path: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """params.yaml with the active profile overlaid (see the module docstring)."""
    if not params_path.exists():
        raise ConfigError(f"no params file at {params_path}")
    raw = read_yaml_mapping(params_path)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    base = raw.get("base")
    profile = base.get("profile", EMBEDDED_PROFILE) if isinstance(base, dict) else EMBEDDED_PROFILE
    if profile != EMBEDDED_PROFILE:
        profiles_dir = params_path.parent / "profiles"
        found = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
        # a name from the list, never a path: "../params" would overlay params.yaml on itself
        if profile not in found:
            raise ConfigError(
                f"base.profile={profile!r} has no file {profiles_dir / f'{profile}.yaml'}; "
                f"choose one of: {', '.join([EMBEDDED_PROFILE, *found])}"
            )
        overlay_path = profiles_dir / f"{profile}.yaml"
        overlay = read_yaml_mapping(overlay_path)
        if not isinstance(overlay.setdefault("base", {}), dict):
            raise ConfigError(f"{overlay_path}: base must be a mapping of keys, got {overlay['base']!r}")
        overlay["base"]["profile"] = profile
        raw = deep_merge(raw, overlay)
        for dotted, value in (overrides or {}).items():  # explicit overrides beat the profile
            _set_dotted(raw, dotted, value)
    return raw


def load_params(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Params:
    """Load and validate every section. ``overrides`` (dotted keys) win over files; for tests."""
    params_path = Path(path) if path else workspace_root() / "params.yaml"
    raw = read_merged(params_path, overrides)

    unknown = sorted(set(raw) - set(SECTIONS) - set(AXES))
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {', '.join(unknown)}; valid: {', '.join([*AXES, *SECTIONS])}"
        )
    axes = {}
    for axis, choices in AXES.items():
        value = raw.get(axis, choices[0])
        check_choice(axis, value, choices)
        axes[axis] = value
    sections = {name: build_section(name, cls, raw.get(name)) for name, cls in SECTIONS.items()}
    check_codebook_size(axes["quantizer"], sections["quantize"].codebook_size)
    return Params(sections=sections, raw=raw, **axes)


def check_codebook_size(quantizer: str, codebook_size: int) -> None:
    """The quantizer's rule on quantize.codebook_size (a power of two where codes are bit strings),
    checked when params load rather than when the quantize stage builds the quantizer."""
    if quantizer not in POWER_OF_TWO_QUANTIZERS:
        return
    try:
        check_power_of_two(quantizer, codebook_size)
    except QuantizeError as error:
        raise ConfigError(str(error)) from error


def check_item_count(params: Params, n_items: int, source: str = "data/prepared/items.parquet") -> None:
    """What needs the item count, checked once the prepared items are read and before any work:
    the dense ceilings' ``embed.eval_k`` and the codebooks' ``quantize.codebook_size`` (each code
    of a level needs an item). train_embedder calls it; quantize checks its embedding rows against
    the codebook itself (semid.quantize.check_embeddings)."""
    if params.embed.eval_k > n_items:
        raise ConfigError(
            f"embed.eval_k={params.embed.eval_k} is more than the {n_items:,} items of {source}; "
            f"it must lie in [1, {n_items}]"
        )
    size = params.quantize.codebook_size
    if size > n_items:
        largest = 1 << (n_items.bit_length() - 1) if params.quantizer in POWER_OF_TWO_QUANTIZERS else n_items
        raise ConfigError(
            f"quantize.codebook_size={size} is more than the {n_items:,} items of {source}, so its codes "
            f"cannot all be used; lower it to at most {largest}"
        )
