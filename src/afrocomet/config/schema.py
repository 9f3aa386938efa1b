"""The config's fields (dataclasses) and their validation.

A run is data + models + a list of stages. Every CLI option maps to one field here. A stage's kind
decides its task and whether it reads a teacher (`StageConfig.task`, `.distills`, `.reads_teacher`):
ask the stage, never test its kind string elsewhere. Reading and writing YAML is config/yaml_io.py.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afrocomet.data.schema import ALL_LANGUAGES, DEFAULT_LANGUAGES
from afrocomet.errors import AfroCometError

SEED_MAX = 2**32 - 1  # numpy's legacy seeding and torch's generators both take it
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")  # what afrocomet.device.resolve_device runs on
# Upper bounds of numbers: a value past them is a typo (or 1e308), not a setting anyone trains with.
LIMITS = {"batch_size": 65536, "grad_accum": 65536, "seeds": 100, "threads": 4096, "jobs": 4096, "lr": 10.0,
          "temperature": 100.0, "final_temperature": 100.0, "sampling_alpha": 10.0, "alpha_candidates": 10.0,
          "epochs": 10000.0, "lr_factors": 100.0}
STAGE_KINDS = ("teacher-pretrain", "teacher-finetune", "distill-mlm", "distill-task", "student-finetune")
MLM_KINDS = ("teacher-pretrain", "distill-mlm")  # the rest train a classifier
DISTILL_KINDS = ("distill-mlm", "distill-task")  # a student learning from a teacher
TEACHER_KINDS = ("teacher-pretrain", "teacher-finetune")  # the teacher itself trains
MATCHING_MODES = ("mean", "projection", "relations")
ADAPTIVE_MODES = ("none", "magnitude", "uncertainty")
NORMALIZE_MODES = ("none", "nfd-unknown")
# A number as people write it (5e-4, 1E-3, +2.5, .5, 3.): PyYAML, which follows YAML 1.1, gives
# `5e-4` and `1e3` to us as strings, since it wants a dot and a signed exponent for a float.
FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


# A field whose metadata has "help" is a flag of `afrocomet run` / `distill` (keys: afrocomet/cli/options.py).
@dataclass
class DataConfig:
    languages: list[str] = field(default_factory=lambda: list(DEFAULT_LANGUAGES), metadata={
        "help": "AfriSenti languages, e.g. hau,swa (default: the five).", "short": "-l", "comma_separated": True})
    data_dir: str | None = field(default=None, metadata={
        "help": "AfriSenti folder; default $AFROCOMET_DATA, then the cache, then download.", "folder": True})
    download: bool = True  # allow downloading AfriSenti from the pinned upstream commit
    # a user's own TSV files (instead of AfriSenti)
    train: str | None = field(default=None, metadata={"help": "Your own train TSV (tweet/text, label, optional ID)."})
    dev: str | None = field(default=None, metadata={"help": "Your own dev TSV (default: 10% of train)."})
    test: str | None = field(default=None, metadata={"help": "Your own test TSV."})
    extra_text: list[str] = field(default_factory=list, metadata={
        "help": "Unlabelled text file (one text a line) for stage 1."})
    # a smaller run on a small machine: at most N rows of each language's train (dev) split, drawn at
    # random with the run's seed, stratified by label; test sets are never cut (scores stay comparable)
    train_rows: int | None = field(default=None, metadata={
        "help": "Use at most N training rows per language (a seeded sample, stratified by label).", "min": 1})
    dev_rows: int | None = field(default=None, metadata={
        "help": "Use at most N dev rows per language (a seeded sample, stratified by label).", "min": 1})
    max_length: int = field(default=128, metadata={  # tokens per text, including <s> and </s>
        "help": "Tokens per text, <s> and </s> included (longer texts are cut).", "min": 8})
    # "nfd-unknown": characters of the training text that the tokenizer maps to <unk> but whose NFD
    # decomposition has pieces (Yoruba ǹ -> n + U+0300 under XLM-R's vocabulary) are decomposed; the
    # rule is written into the tokenizer's normalizer, so every text of the run, and the saved folders, use it
    normalize: str = field(default="none", metadata={
        "help": "Keep letters the tokenizer maps to <unk> by decomposing them (NFD) where the pieces exist.",
        "choices": NORMALIZE_MODES})
    sampling_alpha: float = field(default=0.5, metadata={  # 1 = proportional, 0 = uniform
        "help": "Language sampling p ∝ n^alpha, fixed (no search on dev unless --alpha-candidates)."})
    # choose alpha on dev: a short stage-2 run of the hybrid student per candidate, the best dev score
    # wins ([] = no search: sampling_alpha is used). 0.3 is XLM-R's, 1.0 samples in proportion to size.
    alpha_candidates: list[float] = field(default_factory=lambda: [0.3, 0.5, 1.0], metadata={
        "help": "Choose alpha on dev among these (default 0.3,0.5,1.0; the built-in demo: none, 0.5; "
                "'' = no search)."})
    probe_steps: int = 400  # optimiser steps of each probe on dev: a sampling-alpha candidate, an lr candidate
    per_language: bool = field(default=False, metadata={
        "help": "One student per language instead of one multilingual student."})


STUDENT_INITS = ("random", "teacher", "layers")  # models/init.py INIT_MODES (tests keep the two equal)
MIN_VOCAB_SIZE = 6  # a trained tokenizer's special tokens (4) and two pieces: tokenizer.train_tokenizer


@dataclass
class ModelConfig:
    teacher: str = field(default="demo-teacher", metadata={  # preset name, Hugging Face model id or local folder
        "help": "Teacher: preset, Hugging Face id (Davlan/afro-xlmr-large) or folder."})
    student: str = field(default="demo-student", metadata={  # preset name or local folder
        "help": "Student preset (comet, demo-student, ...) or folder."})
    tokenizer: str | None = None  # None: the teacher's own, or one trained on train text for presets
    vocab_size: int = 8000  # size of the trained tokenizer (presets only)
    tokenizer_sample: int | None = None  # train the tokenizer on at most this many train texts (None: all)
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code shipped with a Hub model to run."})
    trim_vocab: bool = field(default=False, metadata={
        "help": "Keep only the vocabulary rows the training text uses, in teacher and student, before stage 1 "
                "(default: on with a Hub/folder teacher).", "flag": "--trim-vocab/--no-trim-vocab"})
    # teacher fine-tuning on a CPU: frozen parts get no gradient and no optimizer state
    freeze_teacher_embeddings: bool = field(default=False, metadata={
        "help": "Freeze the teacher's embeddings while it is fine-tuned (default: on with a Hub/folder teacher).",
        "flag": "--freeze-teacher-embeddings/--no-freeze-teacher-embeddings"})
    freeze_teacher_layers: int = field(default=0, metadata={
        "help": "Freeze the teacher's lowest N layers while it is fine-tuned.", "min": 0})
    # the combined teacher: the transformer's softened class probabilities mixed with a char 2-5-gram
    # TF-IDF + LR model's (out-of-fold on the training tweets), the weight chosen on dev; off: the
    # transformer alone is the teacher of stage 2 (the paper's method)
    ngram_teacher: bool = field(default=True, metadata={
        "help": "Stage 2's teacher: the transformer combined with a char n-gram model (weight chosen on dev); "
                "--no-ngram-teacher: the transformer alone (the paper's method).",
        "flag": "--ngram-teacher/--no-ngram-teacher"})
    # "teacher": PCA projection (models/init.py); "layers": embeddings and every k-th layer copied, a
    # student of the teacher's width (models/layer_copy.py)
    student_init: str = field(default="random", metadata={
        "help": "Student weights: random, a PCA projection of the teacher's (teacher), or the teacher's "
                "embeddings and every k-th layer copied (layers; the teacher's width).", "choices": STUDENT_INITS})


@dataclass
class StageConfig:
    name: str = "stage"
    kind: str = "distill-task"  # one of STAGE_KINDS
    epochs: float = 1.0
    max_steps: int | None = None  # caps the number of optimiser steps
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    # hybrid loss: weights of each term (0 removes the term), temperature of the soft targets
    kd_weight: float = field(default=1.0, metadata={"help": "Weight of logit KD."})
    attention_weight: float = field(default=1.0, metadata={"help": "Weight of attention matching."})
    hard_weight: float = field(default=1.0, metadata={"help": "Weight of the hard-label loss."})
    temperature: float = field(default=2.0, metadata={"help": "Soft-target temperature T."})
    # the combined teacher (model.ngram_teacher): weight w of the transformer in the KD target
    # p = w·softmax(z/T) + (1-w)·p_ngram (the char n-gram model's out-of-fold probabilities of each
    # training tweet); None: the transformer alone (the paper's target). The run sets it from dev.
    teacher_mix: float | None = None
    final_temperature: float | None = None  # if set, T moves linearly to it over the stage
    adaptive: str = field(default="none", metadata={
        "help": "Balance the loss terms as training goes.", "choices": ADAPTIVE_MODES})
    # attention matching
    matching: str = field(default="mean", metadata={"help": "Attention matching mode.", "choices": MATCHING_MODES})
    # "kl" or "mse" (mean and projection; relations always use KL)
    attention_loss: str = field(default="kl", metadata={
        "help": "Loss on attention maps (mean and projection modes; relations always use KL).", "choices": ("kl", "mse")})
    layer_map: list[list[int]] | None = field(default=None, metadata={  # [[student, teacher], ...]; None = uniform
        "help": "Student:teacher layer pairs, e.g. 0:5,1:11,2:17,3:23 (0-based)."})
    # relations mode; None = the teacher's head count if it divides both hidden sizes, else the student's,
    # else the largest divisor of both hidden sizes up to the larger head count
    relation_heads: int | None = None
    # distill-task with mean matching (or no attention term): read the teacher's logits and pooled maps
    # from a cache (stored in fp16, not bit-exact) instead of running the teacher every epoch
    teacher_cache: bool = field(default=True, metadata={
        "help": "Run the teacher every step of stage 2 instead of reading its cached outputs (stored in fp16).",
        "flag": "--no-teacher-cache", "all_stages": True})
    # a model fine-tuned with its embeddings and lowest N >= 1 layers frozen (freeze_teacher_*): their outputs
    # are computed once per training example in eval mode (stored in fp16) and the stage runs layers N.. only
    # (distill/frozen_prefix.py); off, the frozen layers run every step in train mode (dropout there too)
    frozen_cache: bool = field(default=True, metadata={
        "help": "Run the frozen lower teacher layers every step of teacher fine-tuning instead of reading "
                "their cached outputs (computed once in eval mode, stored in fp16).",
        "flag": "--no-frozen-cache", "all_stages": True})
    # masked LM
    mlm_probability: float = 0.15
    # evaluation
    eval_every: int = 0  # optimiser steps between dev evaluations (and one at the last step); 0 = once per epoch
    patience: int = 3  # evaluations without improvement before stopping early; 0 = never
    min_steps: int = 0  # early stopping never stops the stage before this optimiser step
    progress_every: int = 10  # optimiser steps between refreshes of the progress bar's loss values
    # exact resume (`afrocomet run --resume`): a checkpoint every N optimizer steps (0 = none)
    checkpoint_every: int = 200  # about 0.4 s per demo-teacher checkpoint: ~1.5% of the default run
    keep_checkpoints: int = 2  # the newest K checkpoints of the running stage are kept

    @property
    def task(self) -> str:
        """"mlm" (teacher-pretrain, distill-mlm) or "classification" (the rest)."""
        return "mlm" if self.kind in MLM_KINDS else "classification"

    @property
    def distills(self) -> bool:
        """A student stage that may learn from a teacher (distill-mlm, distill-task)."""
        return self.kind in DISTILL_KINDS

    @property
    def reads_teacher(self) -> bool:
        """Whether the stage runs (or reads cached outputs of) a teacher: a distill stage with a KD or an
        attention term."""
        return self.distills and (self.kd_weight > 0 or self.attention_weight > 0)

    @property
    def trains_teacher(self) -> bool:
        return self.kind in TEACHER_KINDS


@dataclass
class RunConfig:
    out: str = field(default="runs/afrocomet", metadata={
        "help": "Output folder (default runs/afrocomet, or runs/quick with --quick).", "folder": True})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    seeds: int = field(default=1, metadata={"help": "Repeat the student stages with N seeds.", "min": 1})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1 ..."})
    # None: training keeps torch's default (its results depend on the thread count through float
    # summation order), and timing (the efficiency block) uses the free cores (device.choose_threads)
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads for training and timing (default: torch's for training, the free cores for timing).",
        "min": 1})
    # a record: True in the config of the built-in --quick variant (default_config(quick=True)); it changes
    # nothing when a file sets it, and `--quick` beside --config / --resume is refused (cli/run_cmd.py)
    quick: bool = False
    ablations: bool = field(default=True, metadata={  # also train student_kd_only and student_no_distill
        "help": "Train only the hybrid student (no kd-only / no-distill).", "flag": "--no-ablations"})
    compare_adaptive: str = field(default="none", metadata={
        "help": "Also train student_adaptive with this loss balancing and report which won.",
        "choices": ADAPTIVE_MODES})
    compare_init: bool = field(default=False, metadata={
        "help": "Also train the hybrid student with each other --student-init that fits the models."})
    # every student row's stage-2 lr is chosen on dev among these multiples of the stage's lr, a short
    # probe each (data.probe_steps at most); [] or [1] = no search: the stage's lr as it is, for every row
    lr_factors: list[float] = field(default_factory=lambda: [1 / 3, 1.0, 3.0], metadata={
        "help": "Choose each student's stage-2 lr on dev among these multiples of the stage's lr "
                "(default a third, 1 and 3; the built-in demo: 1 and 3; '' = no search)."})
    # student rows trained side by side in worker processes (run/jobs.py), each on threads // jobs
    # threads; a row's results depend on its thread count as ever. None: one per CPU thread (at most the
    # cores and the rows), 1 on a GPU
    jobs: int | None = field(default=None, metadata={
        "help": "Student rows trained at once, each in its own process on its share of the CPU threads "
                "(default: one per thread, at most the rows; 1 on a GPU).", "min": 1})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stages: list[StageConfig] = field(default_factory=list)


# ----------------------------------------------------------------------------- validation


def _check_positive(where: str, name: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise AfroCometError(f"{name} must be {bound}, got {value}", path=where)


def validate_stage(stage: StageConfig, where: str = "config") -> None:
    w = f"{where}: stage '{stage.name}'"
    if stage.kind not in STAGE_KINDS:
        raise AfroCometError(f"{w}: unknown kind '{stage.kind}' (allowed: {', '.join(STAGE_KINDS)})")
    if stage.matching not in MATCHING_MODES:
        raise AfroCometError(f"{w}: unknown matching '{stage.matching}' (allowed: {', '.join(MATCHING_MODES)})")
    if stage.adaptive not in ADAPTIVE_MODES:
        raise AfroCometError(f"{w}: unknown adaptive '{stage.adaptive}' (allowed: {', '.join(ADAPTIVE_MODES)})")
    if stage.attention_loss not in ("kl", "mse"):
        raise AfroCometError(f"{w}: attention_loss must be 'kl' or 'mse', got '{stage.attention_loss}'")
    for name in ("batch_size", "grad_accum", "lr", "temperature", "epochs", "max_steps", "final_temperature",
                 "relation_heads"):
        _check_positive(w, name, getattr(stage, name))
    _check_positive(w, "keep_checkpoints", stage.keep_checkpoints)
    _check_positive(w, "progress_every", stage.progress_every)
    for name in ("kd_weight", "attention_weight", "hard_weight", "weight_decay", "max_grad_norm", "patience",
                 "min_steps", "checkpoint_every", "eval_every"):
        _check_positive(w, name, getattr(stage, name), allow_zero=True)
    if stage.teacher_mix is not None and not 0 <= stage.teacher_mix <= 1:
        raise AfroCometError(f"{w}: teacher_mix must be in [0, 1], got {stage.teacher_mix}")
    if not 0 < stage.mlm_probability < 1:
        raise AfroCometError(f"{w}: mlm_probability must be in (0, 1), got {stage.mlm_probability}")
    if not 0 <= stage.warmup_ratio < 1:
        raise AfroCometError(f"{w}: warmup_ratio must be in [0, 1), got {stage.warmup_ratio}")
    if stage.layer_map is not None:
        for pair in stage.layer_map:
            if len(pair) != 2 or min(pair) < 0:
                raise AfroCometError(f"{w}: layer_map entries are [student_layer, teacher_layer] >= 0, got {pair}")


def _line_of(path: tuple, lines: dict[tuple, int] | None) -> int | None:
    """The line of `path` in the YAML file, or of the nearest enclosing key that has one."""
    for cut in range(len(path), -1, -1):
        if lines and path[:cut] in lines:
            return lines[path[:cut]]
    return None


def _check_number(config: RunConfig, path: tuple, value: int | float, fail) -> None:
    name = next(p for p in reversed(path) if isinstance(p, str))
    label = ".".join(str(p) for p in path if isinstance(p, str))
    if path[0] == "stages":
        label = f"stage '{config.stages[path[1]].name}': {name}"
    if isinstance(value, float) and not math.isfinite(value):
        fail(path, f"{label} must be a finite number, got {value}")
    limit = LIMITS.get(name)
    if limit is not None and value > limit:
        fail(path, f"{label} must be at most {limit:g}, got {value:g}")


def _check_numbers(config: RunConfig, obj: Any, path: tuple, fail) -> None:
    """Every number of the config finite and within LIMITS, nested dataclasses and lists included."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            where = path + (f.name,) + (() if i is None else (i,))
            if dataclasses.is_dataclass(item):
                _check_numbers(config, item, where, fail)
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                _check_number(config, where, item, fail)


def check_values(config: RunConfig, where: str = "config", lines: dict[tuple, int] | None = None) -> None:
    """Seed range, device name, and finite, sane numbers; errors name `where` and the line in `lines`."""

    def fail(path: tuple, message: str) -> typing.NoReturn:
        raise AfroCometError(message, path=where, line=_line_of(path, lines))

    if not 0 <= config.seed <= SEED_MAX:
        fail(("seed",), f"seed must be between 0 and {SEED_MAX}, got {config.seed}")
    if not DEVICE_PATTERN.fullmatch(str(config.device)):
        fail(("device",), f"unknown device '{config.device}' (expected auto, cpu, cuda or cuda:N)")
    _check_numbers(config, config, (), fail)


def validate(config: RunConfig, where: str = "config", lines: dict[tuple, int] | None = None) -> RunConfig:
    check_values(config, where, lines)
    unknown = [lang for lang in config.data.languages if lang not in ALL_LANGUAGES]
    custom = config.data.train is not None
    if unknown and not custom:
        raise AfroCometError(f"{where}: unknown language(s) {', '.join(unknown)} (allowed: {', '.join(ALL_LANGUAGES)})")
    if not config.data.languages and not custom:
        raise AfroCometError(f"{where}: data.languages is empty")
    _check_positive(where, "data.train_rows", config.data.train_rows)
    _check_positive(where, "data.dev_rows", config.data.dev_rows)
    _check_positive(where, "data.max_length", config.data.max_length)
    if config.data.max_length < 8:
        raise AfroCometError(f"{where}: data.max_length must be >= 8, got {config.data.max_length}")
    _check_positive(where, "data.sampling_alpha", config.data.sampling_alpha, allow_zero=True)
    for alpha in config.data.alpha_candidates:
        _check_positive(where, "data.alpha_candidates entry", alpha, allow_zero=True)
    _check_positive(where, "data.probe_steps", config.data.probe_steps)
    for factor in config.lr_factors:
        _check_positive(where, "lr_factors entry", factor)
    if config.compare_adaptive not in ADAPTIVE_MODES:
        raise AfroCometError(f"{where}: unknown compare_adaptive '{config.compare_adaptive}' "
                             f"(allowed: {', '.join(ADAPTIVE_MODES)})")
    if config.data.normalize not in NORMALIZE_MODES:
        raise AfroCometError(f"{where}: unknown data.normalize '{config.data.normalize}' "
                             f"(allowed: {', '.join(NORMALIZE_MODES)})")
    _check_positive(where, "model.freeze_teacher_layers", config.model.freeze_teacher_layers, allow_zero=True)
    _check_positive(where, "model.vocab_size", config.model.vocab_size)
    if config.model.vocab_size < MIN_VOCAB_SIZE:  # the tokenizer's 4 special tokens and 2 pieces (tokenizer.py)
        raise AfroCometError(f"model.vocab_size must be at least {MIN_VOCAB_SIZE}, got {config.model.vocab_size}",
                             path=where)
    _check_positive(where, "model.tokenizer_sample", config.model.tokenizer_sample)
    _check_positive(where, "seeds", config.seeds)
    _check_positive(where, "threads", config.threads)
    _check_positive(where, "jobs", config.jobs)
    if config.model.student_init not in STUDENT_INITS:
        raise AfroCometError(f"{where}: model.student_init must be one of {', '.join(STUDENT_INITS)}, "
                             f"got '{config.model.student_init}'")
    names = [s.name for s in config.stages]
    if len(set(names)) != len(names):
        raise AfroCometError(f"{where}: stage names must be unique, got {names}")
    for stage in config.stages:
        validate_stage(stage, where)
    return config
