"""`afrocomet run`: data -> tokenizer -> teacher preparation -> stage 1 -> stage 2 -> evaluation -> report.

The stages themselves all go through `distill.trainer.train_stage`; this module only decides which
models and data each stage gets, and in what order. Systems compared in one run:

- `teacher`, `student` (hybrid: KD + attention + labels),
- `student_kd_only` (attention weight 0), `student_no_distill` (labels only, same budget),
- `tfidf_baseline` (char 2-5-gram TF-IDF + logistic regression), `majority`.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from afrocomet.config import RunConfig, StageConfig, validate
from afrocomet.data.batching import Encoded, MLMMasker, collate, encode
from afrocomet.data.corpus import read_extra_text
from afrocomet.data.schema import Dataset
from afrocomet.errors import AfroCometError
from afrocomet.models.presets import is_preset

log = logging.getLogger("afrocomet")

STUDENT_STAGES = ("distill-mlm", "distill-task", "student-finetune")


# ----------------------------------------------------------------------------- default configs


def default_stages(quick: bool = False, pretrained_teacher: bool = False) -> list[StageConfig]:
    """The paper's stages with budgets that fit the built-in default on 2 CPU cores (15 min)."""
    if quick:
        common = dict(batch_size=32, max_steps=12, log_every=4, lr=2e-3)
        stages = [
            StageConfig(name="teacher-pretrain", kind="teacher-pretrain", epochs=1, **common),
            StageConfig(name="teacher-finetune", kind="teacher-finetune", epochs=1, **common),
            StageConfig(name="stage1", kind="distill-mlm", epochs=1, **common),
            StageConfig(name="stage2", kind="distill-task", epochs=1, **common),
        ]
        return stages[1:] if pretrained_teacher else stages
    if pretrained_teacher:  # the paper's setting: a real teacher, typically on a GPU
        return [
            StageConfig(name="teacher-finetune", kind="teacher-finetune", epochs=3, batch_size=32, lr=2e-5,
                        patience=2),
            StageConfig(name="stage1", kind="distill-mlm", epochs=3, batch_size=64, lr=5e-4, temperature=2.0,
                        patience=0),
            StageConfig(name="stage2", kind="distill-task", epochs=5, batch_size=32, lr=2e-4, temperature=2.0,
                        patience=2),
        ]
    # the built-in default: every budget sized so the whole run fits 15 minutes on 2 CPU cores
    # (measured from a fresh clone: 580 s for the run on 2 cores, 688 s with the install; 741 s when busier)
    return [
        StageConfig(name="teacher-pretrain", kind="teacher-pretrain", max_steps=300, batch_size=64, lr=5e-4,
                    warmup_ratio=0.1, patience=0, eval_every=150),
        StageConfig(name="teacher-finetune", kind="teacher-finetune", epochs=2.5, max_steps=1200, batch_size=32,
                    lr=3e-4, patience=3, eval_every=1200),  # dev F1 still rises at 1,200: one evaluation, at the end
        StageConfig(name="stage1", kind="distill-mlm", max_steps=150, batch_size=64, lr=1e-3, temperature=2.0,
                    patience=0, eval_every=150),
        StageConfig(name="stage2", kind="distill-task", epochs=1.0, batch_size=32, lr=1e-3, temperature=2.0,
                    patience=3, eval_every=600),
    ]


def default_config(quick: bool = False, teacher: str | None = None) -> RunConfig:
    """The built-in default (demo presets, tokenizer trained here), its --quick variant, or the
    paper's setting when `teacher` names a pretrained model (comet student, teacher's tokenizer)."""
    config = RunConfig(quick=quick)
    if teacher is not None and not is_preset(teacher):
        config.model.teacher = teacher
        config.model.student = "comet"
        config.model.trim_vocab = True  # AfriSenti text uses a small part of XLM-R's 250,002 pieces
        config.stages = default_stages(quick, pretrained_teacher=True)
    else:
        if quick:
            config.model.teacher, config.model.student, config.model.vocab_size = "tiny-teacher", "tiny-student", 1000
            config.model.tokenizer_sample = 3000
            config.data.max_length = 64
            config.ablations = True
        elif teacher is not None:
            config.model.teacher = teacher
        config.stages = default_stages(quick)
    return validate(config)


# ----------------------------------------------------------------------------- data


@dataclass
class RunData:
    datasets: dict[str, Dataset]
    tokenizer: object
    train: Encoded  # all languages, groups = language
    dev: dict[str, Encoded]
    test: dict[str, Encoded]
    unlabelled: Encoded  # stage-1 text (train tweets + extra text files)
    labels: tuple[str, ...] = ()
    truncated: dict[str, int] = field(default_factory=dict)

    def only(self, lang: str) -> "RunData":
        """The same data restricted to one language (stage-1 text keeps the user's extra text)."""
        def keep(data: Encoded, groups: tuple[str, ...]) -> Encoded:
            return data.subset([i for i, g in enumerate(data.groups) if g in groups])

        return replace(self, datasets={lang: self.datasets[lang]}, train=keep(self.train, (lang,)),
                       dev={lang: self.dev[lang]}, test={lang: self.test[lang]},
                       unlabelled=keep(self.unlabelled, (lang, "extra")),
                       truncated={lang: self.truncated[lang]})


def load_datasets(config: RunConfig) -> dict[str, Dataset]:
    from afrocomet.data.afrisenti import load_afrisenti, load_custom

    d = config.data
    if d.train is not None:
        name = d.languages[0] if len(d.languages) == 1 else "custom"
        return {name: load_custom(train=d.train, dev=d.dev, test=d.test, name=name)}
    return load_afrisenti(d.languages, d.data_dir, download=d.download)


def prepare_data(config: RunConfig, datasets: dict[str, Dataset], tokenizer) -> RunData:
    n = config.data.max_length
    labels = next(iter(datasets.values())).labels
    train, dev, test, truncated = [], {}, {}, {}
    for lang, ds in datasets.items():
        train.append(encode(tokenizer, ds.texts("train"), n, labels=ds.label_ids("train"), group=lang))
        dev[lang] = encode(tokenizer, ds.texts("dev"), n, labels=ds.label_ids("dev"), group=lang)
        test[lang] = encode(tokenizer, ds.texts("test"), n, labels=ds.label_ids("test"), group=lang)
        truncated[lang] = test[lang].truncated
    all_train = Encoded.concat(train)
    extra = read_extra_text(config.data.extra_text)
    unlabelled = Encoded(ids=list(all_train.ids), groups=list(all_train.groups))
    if extra:
        more = encode(tokenizer, extra, n, group="extra")
        unlabelled = Encoded.concat([unlabelled, more])
    return RunData(datasets, tokenizer, all_train, dev, test, unlabelled, labels, truncated)


# ----------------------------------------------------------------------------- evaluation hooks


def predict_encoded(model: nn.Module, data: Encoded, pad_id: int, device, batch_size: int = 128) -> np.ndarray:
    """Class logits for already-encoded texts (length-sorted batches, original order)."""
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    out = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch = collate(data, index, pad_id)
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
            out[index] = logits.float().cpu().numpy()
    model.train(was_training)
    return out


def dev_f1(dev: dict[str, Encoded], pad_id: int, device) -> Callable[[nn.Module], float]:
    """Dev score for task stages: weighted F1 averaged over languages."""
    from sklearn.metrics import f1_score

    def score(model: nn.Module) -> float:
        values = []
        for data in dev.values():
            pred = predict_encoded(model, data, pad_id, device).argmax(-1)
            values.append(f1_score(data.labels, pred, average="weighted"))
        return float(np.mean(values))

    return score


def dev_mlm(dev: dict[str, Encoded], tokenizer, device, limit: int = 512, seed: int = 1234) -> Callable[[nn.Module], float]:
    """Dev score for masked-LM stages: minus the MLM loss on a fixed, fixed-mask dev sample."""
    from afrocomet.distill.objective import model_outputs

    data = Encoded.concat(list(dev.values()))
    index = np.random.default_rng(seed).permutation(len(data))[:limit]
    masker = MLMMasker(tokenizer, 0.15, seed=seed)
    batches = [masker(collate(data, index[i:i + 64].tolist(), tokenizer.pad_token_id)) for i in range(0, len(index), 64)]

    def score(model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model_outputs(model, batch, "mlm")
                if out["labels"].numel():
                    total += float(torch.nn.functional.cross_entropy(out["logits"].float(), out["labels"], reduction="sum"))
                    count += out["labels"].numel()
        model.train(was_training)
        return -total / max(count, 1)

    return score


# ----------------------------------------------------------------------------- models


def convert_head(model: nn.Module, task: str, num_labels: int, id2label: dict[int, str]) -> nn.Module:
    """The same encoder with another head: masked-LM <-> sequence classification.

    The encoder weights are copied; the new head starts as the model class initialises it.
    """
    from afrocomet.models.build import build_model

    config = copy.deepcopy(model.config)
    config.num_labels = num_labels
    config.id2label = {int(k): v for k, v in id2label.items()}
    config.label2id = {v: int(k) for k, v in id2label.items()}
    new = build_model(config, task)
    missing, unexpected = new.base_model.load_state_dict(model.base_model.state_dict(), strict=False)
    bad = [k for k in missing if not k.startswith("pooler.")]
    if bad or unexpected:
        raise AfroCometError(f"could not move the encoder to a {task} model: missing {bad[:3]}, unexpected {unexpected[:3]}")
    return new.to(next(model.parameters()).device)


def save_hf_model(model: nn.Module, tokenizer, out_dir: Path) -> Path:
    """A standard Hugging Face folder (config.json with id2label, model.safetensors, tokenizer files)."""
    from afrocomet.io import atomic_dir
    from afrocomet.tokenizer import write_tokenizer

    from transformers.utils import logging as hf_logging

    with atomic_dir(out_dir) as tmp:
        hf_logging.disable_progress_bar()  # one shard of a small model: no bar needed
        try:
            model.save_pretrained(tmp)  # safetensors
        finally:
            hf_logging.enable_progress_bar()
        write_tokenizer(tokenizer, tmp, model.config)  # with model_max_length
    return out_dir


@dataclass
class Context:
    """What every stage of one run shares."""

    config: RunConfig
    data: RunData
    device: torch.device
    work: Path
    progress: bool = True
    results: dict[str, dict] = field(default_factory=dict)  # stage name -> StageResult dict
    alpha: float | None = None  # language sampling alpha chosen on dev (None: data.sampling_alpha)
    alpha_search: dict | None = None  # what the choice saw
    vocab_keep: list[int] | None = None  # old token ids kept by vocabulary trimming, if it ran

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.data.labels))

    @property
    def pad_id(self) -> int:
        return self.data.tokenizer.pad_token_id

    @property
    def sampling_alpha(self) -> float:
        return self.config.data.sampling_alpha if self.alpha is None else self.alpha

    @property
    def state(self) -> Path:
        """What resuming needs (finished stages, checkpoints, tokenizer); see afrocomet.workdir."""
        from afrocomet.workdir import STATE

        return self.work / STATE

    def train(self, stage: StageConfig, model: nn.Module, *, teacher: nn.Module | None = None, tag: str = "",
              seed: int | None = None, alpha: float | None = None, build_cache: bool | None = None) -> nn.Module:
        """Run one stage through the single training loop and record what happened.

        The one place that decides: a stage finished before is loaded (weights, result, RNG
        states), a stage with a checkpoint continues from its newest one, any other is trained.
        """
        from afrocomet.distill.checkpoint import is_finished, list_checkpoints, load_finished, save_finished
        from afrocomet.distill.parallel import processes
        from afrocomet.distill.objective import stage_task
        from afrocomet.distill.trainer import train_stage

        name = f"{stage.name}{tag}"
        record, checkpoints = self.state / "stages" / name, self.state / "checkpoints" / name
        procs = processes()
        procs.barrier()  # every process sees the same finished stages and checkpoints
        if is_finished(record):
            self.results[name] = load_finished(record, model)
            log.info("stage %s finished before: loaded %s", name, record.relative_to(self.work))
            return model.to(self.device).eval()
        saved = list_checkpoints(checkpoints)
        if saved:
            log.info("stage %s resumes from %s", name, saved[-1].relative_to(self.work))
        task = stage_task(stage.kind)
        data = self.data.unlabelled if task == "mlm" else self.data.train
        evaluate = dev_mlm(self.data.dev, self.data.tokenizer, self.device) if task == "mlm" else \
            dev_f1(self.data.dev, self.pad_id, self.device)
        alpha = (self.sampling_alpha if alpha is None else alpha) if task == "classification" else None
        t0 = time.perf_counter()
        log.info("stage %s (%s) starts", name, stage.kind)
        result = train_stage(stage, model, data, tokenizer=self.data.tokenizer, teacher=teacher, evaluate=evaluate,
                             out_dir=self.work / "logs" / name, device=self.device,
                             seed=self.config.seed if seed is None else seed, alpha=alpha, progress=self.progress,
                             checkpoint_dir=checkpoints, resume_from=saved[-1] if saved else None,
                             build_cache=build_cache)
        log.info("stage %s done: %d steps in %.1fs, dev %.4f", name, result.steps, time.perf_counter() - t0,
                 result.best_score if result.best_score is not None else float("nan"))
        if result.log:
            result.log = str(Path(result.log).relative_to(self.work))  # the run folder is renamed at the end
        self.results[name] = result.to_dict()
        if procs.is_main:
            save_finished(record, model, self.results[name])
            shutil.rmtree(checkpoints, ignore_errors=True)
        return model


# ----------------------------------------------------------------------------- the run

class Variant(NamedTuple):
    """A student trained in the run: system name, tag in stage names, overrides of the distillation
    stages' fields (StageConfig) and of the model fields (ModelConfig)."""

    system: str
    tag: str
    stage: dict
    model: dict = {}


VARIANTS = (
    Variant("student", "", {}),
    Variant("student_kd_only", "[kd_only]", {"attention_weight": 0.0}),
    Variant("student_no_distill", "[no_distill]", {"kd_weight": 0.0, "attention_weight": 0.0}),
)
ALL = "*"  # key of the one multilingual model in a {language: model} mapping


def language_contexts(ctx: "Context") -> dict[str, "Context"]:
    """{ALL: ctx} for one multilingual student, or one context per language (data.per_language)."""
    if not ctx.config.data.per_language or len(ctx.data.datasets) == 1:
        return {ALL: ctx}
    return {lang: replace(ctx, data=ctx.data.only(lang)) for lang in ctx.data.datasets}


def run_variants(config: RunConfig) -> list[Variant]:
    """The students one run trains: the hybrid one, the ablations, (compare_adaptive) the hybrid
    student with adaptive loss weights, and (compare_init) with the other `model.student_init`."""
    variants = list(VARIANTS if config.ablations else VARIANTS[:1])
    if config.compare_adaptive != "none":
        variants.append(Variant("student_adaptive", "[adaptive]", {"adaptive": config.compare_adaptive}))
    if config.compare_init:
        other = "random" if config.model.student_init == "teacher" else "teacher"
        variants.append(Variant(f"student_{other}_init", f"[{other}_init]", {}, {"student_init": other}))
    return variants


def _stage(config: RunConfig, kind: str) -> StageConfig | None:
    return next((s for s in config.stages if s.kind == kind), None)


def make_tokenizer(ctx_config: RunConfig, datasets: dict[str, Dataset]):
    """The teacher's own tokenizer, or (for preset teachers) one trained on the training split only."""
    from afrocomet.tokenizer import tokenizer_for

    texts = [t for ds in datasets.values() for t in ds.texts("train")]
    sample = ctx_config.model.tokenizer_sample
    if sample is not None and sample < len(texts):
        keep = np.random.default_rng(ctx_config.seed).choice(len(texts), sample, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    return tokenizer_for(ctx_config.model, texts)


def prepare_teacher(ctx: Context) -> tuple[nn.Module | None, nn.Module]:
    """Teacher preparation: (masked-LM teacher for stage 1, classification teacher for stage 2)."""
    from afrocomet.models.build import build_model, load_pretrained
    from afrocomet.models.presets import get_preset

    m, vocab = ctx.config.model, len(ctx.data.tokenizer)
    labels = ctx.id2label
    pretrain, finetune = _stage(ctx.config, "teacher-pretrain"), _stage(ctx.config, "teacher-finetune")
    need_mlm = _stage(ctx.config, "distill-mlm") is not None
    if is_preset(m.teacher):
        mlm = build_model(get_preset(m.teacher), "mlm", vocab_size=vocab, seed=ctx.config.seed)
        if pretrain is not None:
            ctx.train(pretrain, mlm)
        cls = convert_head(mlm, "classification", len(labels), labels)
    else:
        mlm = load_pretrained(m.teacher, "mlm", trust_remote_code=m.trust_remote_code) if need_mlm else None
        cls = load_pretrained(m.teacher, "classification", num_labels=len(labels), id2label=labels,
                              trust_remote_code=m.trust_remote_code)
        if has_task_head(m.teacher, labels, m.trust_remote_code):
            log.info("teacher %s already has a %d-class head: fine-tuning skipped", m.teacher, len(labels))
            finetune = None
    if finetune is not None:
        ctx.train(finetune, cls)
    for model in (mlm, cls):
        if model is not None:
            model.eval().requires_grad_(False)
    return mlm, cls


def trim_vocabulary(ctx: Context, teacher_mlm: nn.Module | None, teacher_cls: nn.Module) -> dict:
    """Keep the vocabulary rows the training text (train tweets + extra text) uses, in both teachers
    with the same ids; the run's data is re-encoded with the trimmed tokenizer, and students are
    built at (or, from a folder, trimmed to) the new size. Returns the numbers for results.json."""
    from afrocomet.models.vocab import trim_together

    texts = [t for ds in ctx.data.datasets.values() for t in ds.texts("train")]
    texts += read_extra_text(ctx.config.data.extra_text)
    models = {"teacher": teacher_cls, **({"teacher_mlm": teacher_mlm} if teacher_mlm is not None else {})}
    tokenizer, keep, reports = trim_together(models, ctx.data.tokenizer, texts)
    ctx.data = prepare_data(ctx.config, ctx.data.datasets, tokenizer)
    ctx.vocab_keep = keep
    r = reports["teacher"]
    log.info("vocabulary trimmed: %s", r.summary())
    return {"rows_kept": r.rows_kept, "rows_total": r.rows_total, "kept_fraction": r.kept_fraction, "texts": r.texts,
            "teacher": {"parameters_before": r.parameters_before, "parameters_after": r.parameters_after}}


def _student_trim(trim: dict, student: nn.Module) -> dict:
    """The student's parameters now and with the untrimmed vocabulary (only word-embedding rows differ)."""
    from afrocomet.models.build import count_parameters

    after = count_parameters(student)
    removed = (trim["rows_total"] - trim["rows_kept"]) * student.config.hidden_size
    return {**trim, "student": {"parameters_before": after + removed, "parameters_after": after}}


def has_task_head(name_or_path: str, id2label: dict[int, str], trust_remote_code: bool = False) -> bool:
    """True when a saved model is already a sequence classifier over exactly these labels."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return False
    archs = config.architectures or []
    same = {str(v).lower() for v in config.id2label.values()} == {v.lower() for v in id2label.values()}
    return any(a.endswith("ForSequenceClassification") for a in archs) and same


def train_student(ctx: Context, teacher_mlm, teacher_cls, tag: str, overrides: dict, seed: int,
                  model_overrides: dict | None = None) -> nn.Module:
    """Stage 1 (task-agnostic, MLM) then stage 2 (task-specific) for one student variant."""
    from afrocomet.models.build import build_model, load_pretrained
    from afrocomet.models.presets import get_preset

    m, vocab, labels = replace(ctx.config.model, **(model_overrides or {})), len(ctx.data.tokenizer), ctx.id2label
    torch.manual_seed(seed)
    if is_preset(m.student):
        student = build_model(get_preset(m.student), "mlm", vocab_size=vocab, seed=seed)
        if m.student_init == "teacher":
            init_student(ctx, student, teacher_mlm if teacher_mlm is not None else teacher_cls, tag)
    else:
        student = load_pretrained(m.student, "mlm", trust_remote_code=m.trust_remote_code)
        if m.student_init == "teacher":
            log.info("student %s is a saved model: its own weights are kept (student_init=teacher skipped)", m.student)
        if ctx.vocab_keep is not None:
            from afrocomet.models.vocab import trim_model

            student = trim_model(student, ctx.vocab_keep)
    for stage in ctx.config.stages:
        if stage.kind not in STUDENT_STAGES:
            continue
        stage = replace(stage, **overrides) if stage.kind != "student-finetune" else stage
        if stage.kind == "distill-mlm":
            ctx.train(stage, student, teacher=teacher_mlm if _uses_teacher(stage) else None, tag=tag, seed=seed)
        else:
            if "MaskedLM" in type(student).__name__:
                student = convert_head(student, "classification", len(labels), labels)
            teacher = teacher_cls if _uses_teacher(stage) else None
            if stage.kind == "distill-task" and ctx.alpha is None and _searches_alpha(ctx):
                choose_alpha(ctx, stage, student, teacher, seed)
            ctx.train(stage, student, teacher=teacher, tag=tag, seed=seed)
    if "MaskedLM" in type(student).__name__:
        student = convert_head(student, "classification", len(labels), labels)
    return student.eval()


def init_student(ctx: Context, student: nn.Module, teacher: nn.Module, tag: str) -> None:
    """student_init=teacher (models/init.py); what was done is recorded with the stage results."""
    from afrocomet.models.init import init_from_teacher

    t0 = time.perf_counter()
    report = {"kind": "student-init", "steps": 0, **init_from_teacher(student, teacher)}
    report["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("student initialised from the teacher (explained variance %.3f) in %.1fs", report["explained_variance"],
             report["seconds"])
    ctx.results[f"student-init{tag}"] = report


def _searches_alpha(ctx: Context) -> bool:
    return bool(ctx.config.data.alpha_candidates) and len(set(ctx.data.train.groups)) > 1


def choose_alpha(ctx: Context, stage: StageConfig, student: nn.Module, teacher: nn.Module | None, seed: int) -> float:
    """Language sampling alpha chosen on dev: a short copy of `stage` per candidate, from the same
    student; the best dev score wins (ties: the one nearest data.sampling_alpha). Sets ctx.alpha.

    The probes read the teacher-output cache that `stage` itself would build (they build it first),
    so the search costs the student's steps only."""
    from afrocomet.distill.trainer import reads_an_epoch

    steps, default = min(ctx.config.data.alpha_search_steps, stage.max_steps or math.inf), ctx.config.data.sampling_alpha
    build = reads_an_epoch(stage, len(ctx.data.train))
    scores: dict[float, float] = {}
    for alpha in ctx.config.data.alpha_candidates:
        probe = replace(stage, name=f"alpha-search[{alpha:g}]", max_steps=steps, eval_every=steps, patience=0)
        ctx.train(probe, copy.deepcopy(student), teacher=teacher, seed=seed, alpha=alpha, build_cache=build)
        scores[alpha] = float(ctx.results[probe.name]["best_score"])
    ctx.alpha = max(scores, key=lambda a: (scores[a], -abs(a - default)))
    ctx.alpha_search = {"stage": stage.name, "steps": steps, "dev_weighted_f1": {f"{a:g}": v for a, v in scores.items()},
                        "chosen": ctx.alpha}
    log.info("language sampling alpha %g chosen on dev (%s)", ctx.alpha,
             ", ".join(f"{a:g}: {v:.4f}" for a, v in scores.items()))
    return ctx.alpha


def _uses_teacher(stage: StageConfig) -> bool:
    return stage.kind in ("distill-mlm", "distill-task") and (stage.kd_weight > 0 or stage.attention_weight > 0)


def evaluate_systems(ctx: Context, models: dict[str, list[dict[str, nn.Module]]]) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics per language and system (mean ± std over seeds), plus the baselines.

    `models[system]` holds one {language or ALL: model} mapping per seed.

    Returns (languages.<lang>.<system> metrics, student test predictions per language).
    """
    from afrocomet.evaluate import compute_metrics, majority_baseline, tfidf_baseline

    labels = ctx.data.labels
    out: dict[str, dict] = {}
    student_preds: dict[str, np.ndarray] = {}
    for lang, ds in ctx.data.datasets.items():
        gold = ctx.data.test[lang].labels
        row: dict[str, dict] = {}
        for system, seeded in models.items():
            runs = []
            for i, per_language in enumerate(seeded):
                model = per_language.get(lang, per_language.get(ALL))
                pred = predict_encoded(model, ctx.data.test[lang], ctx.pad_id, ctx.device).argmax(-1)
                runs.append(compute_metrics(gold, pred.tolist(), labels))
                if system == "student" and i == 0:
                    student_preds[lang] = pred
            row[system] = _mean_over_seeds(runs)
        train_labels = ds.label_ids("train")
        row["tfidf_baseline"] = compute_metrics(
            gold, tfidf_baseline(ds.texts("train"), train_labels, ds.texts("test"), seed=ctx.config.seed), labels)
        row["majority"] = compute_metrics(gold, majority_baseline(train_labels, len(gold)), labels)
        out[lang] = row
    return out, student_preds


def _mean_over_seeds(runs: list[dict]) -> dict:
    """First seed's full metrics, with scalar metrics replaced by the mean and `<metric>_std` added."""
    merged = dict(runs[0])
    if len(runs) > 1:
        for key in ("accuracy", "weighted_f1", "macro_f1"):
            values = [r[key] for r in runs]
            merged[key] = float(np.mean(values))
            merged[f"{key}_std"] = float(np.std(values, ddof=1))
    return merged


def write_predictions(ctx: Context, preds: dict[str, np.ndarray], out: Path) -> None:
    """AfriSenti submission format: columns ID and label (ID from the input, else the row number)."""
    from afrocomet.io import atomic_write_text

    for lang, pred in preds.items():
        examples = ctx.data.datasets[lang].splits["test"]
        lines = ["ID\tlabel"]
        for i, (ex, p) in enumerate(zip(examples, pred)):
            lines.append(f"{ex.id if ex.id is not None else i}\t{ctx.data.labels[int(p)]}")
        atomic_write_text(out / "predictions" / f"{lang}.tsv", "\n".join(lines) + "\n")


def measure_efficiency(ctx: Context, teacher: nn.Module, student: nn.Module, n_texts: int = 200) -> dict:
    """Teacher vs student on real test tweets, side by side in this process (see afrocomet.bench)."""
    from afrocomet.bench import compare

    rng = np.random.default_rng(ctx.config.seed)
    texts = [t for ds in ctx.data.datasets.values() for t in ds.texts("test")]
    texts = [texts[i] for i in rng.permutation(len(texts))[:n_texts]]
    raw = compare(teacher, student, ctx.data.tokenizer, ctx.data.tokenizer, texts,
                  max_length=ctx.config.data.max_length, device=str(ctx.device))
    flat = {side: _flat_bench(raw[side]) for side in ("teacher", "student")}
    t, s = flat["teacher"], flat["student"]
    flat["ratios"] = {k: (t[k] / s[k] if s[k] else None) for k in
                      ("parameters", "disk_bytes", "latency_ms_p50", "latency_ms_p95", "peak_memory_bytes")}
    flat["ratios"]["texts_per_s"] = s["texts_per_s"] / t["texts_per_s"] if t["texts_per_s"] else None
    flat.update(device=raw["device"], threads=raw["threads"], n_texts=raw["n_texts"])
    return flat


def _flat_bench(side: dict) -> dict:
    return {"parameters": side["parameters"], "disk_bytes": side["disk_bytes"],
            "latency_ms_p50": side["latency"]["p50_ms"], "latency_ms_p95": side["latency"]["p95_ms"],
            "texts_per_s": side["throughput"]["texts_per_s"], "peak_memory_bytes": side["memory_bytes"]}


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to replace another run's results unless asked to."""
    if out.exists() and not out.is_dir():
        raise AfroCometError("output path exists and is not a folder", path=out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "another run's results" if (out / "results.json").exists() else "files"
        raise AfroCometError(f"output folder already holds {what}; pass --overwrite or choose another --out", path=out)


def check_resume_config(config: RunConfig, partial: Path) -> None:
    """Refuse to resume with a config other than the saved one (`out` may differ)."""
    from afrocomet.config import load_config, to_dict

    saved = to_dict(load_config(partial / "config.yaml"))
    given = to_dict(config)
    saved.pop("out"), given.pop("out")
    diff = _first_difference(saved, given)
    if diff is not None:
        key, a, b = diff
        raise AfroCometError(f"--resume: the given config differs from the saved one in {key or 'the config'} "
                             f"(saved {a!r}, given {b!r}); resume without flags to use the saved config",
                             path=partial / "config.yaml")


def _first_difference(a, b, key: str = ""):
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return next((d for k in a if (d := _first_difference(a[k], b[k], f"{key}.{k}" if key else k))), None)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _first_difference(x, y, f"{key}[{i}]"))), None)
    return None if a == b else (key, a, b)


def prepare_tokenizer(config: RunConfig, datasets: dict[str, Dataset], state: Path):
    """The run's tokenizer, saved in the working folder so that a resumed run uses the very same one."""
    from afrocomet.tokenizer import load_tokenizer, save_tokenizer

    from afrocomet.distill.parallel import processes

    folder = state / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    tokenizer = make_tokenizer(config, datasets)  # deterministic: every process trains the same one
    if processes().is_main:
        save_tokenizer(tokenizer, folder)
    return tokenizer


def run(config: RunConfig, *, overwrite: bool = False, progress: bool = True, resume: bool = False,
        source: str = "config") -> dict:
    """The whole method on one config; everything lands in `config.out` at once at the end.

    Pre-flight first (models, weights, layer maps, matching; then the tokenizer against the models'
    vocabularies): a bad run fails in seconds, before any training. `source` names the config in
    error messages (e.g. its file).

    The run is built in `<out>.partial/` (see `afrocomet.workdir`); with `resume`, an interrupted
    run there continues: finished stages are loaded, the running one restarts from its checkpoint.
    """
    from afrocomet import __version__
    from afrocomet.config import save_config, to_dict
    from afrocomet.distill.doctor import check_tokenizer_fits, preflight
    from afrocomet.device import resolve_device
    from afrocomet.evaluate import average_metrics, retention
    from afrocomet.io import atomic_write_json, atomic_write_text
    from afrocomet.report import model_card, write_report

    from afrocomet.distill.parallel import processes
    from afrocomet.workdir import STATE, partial_dir, run_folder

    config = validate(config)
    out = Path(config.out)
    procs = processes()
    if procs.is_main:
        check_output_dir(out, overwrite)
    shapes = preflight(config, where=source)
    if resume:
        if not (partial_dir(out) / "config.yaml").is_file():
            raise AfroCometError("nothing to resume: no interrupted run here", path=partial_dir(out))
        check_resume_config(config, partial_dir(out))
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)  # new heads of pretrained models: the same in every process and launcher
    with run_folder(out, resume=resume, overwrite=overwrite, main=procs.is_main) as work:
        if procs.is_main:
            save_config(config, work / "config.yaml")
        datasets = load_datasets(config)
        tokenizer = prepare_tokenizer(config, datasets, work / STATE)
        check_tokenizer_fits(config, tokenizer, shapes)
        data = prepare_data(config, datasets, tokenizer)
        ctx = Context(config, data, device, work, progress)
        teacher_mlm, teacher = prepare_teacher(ctx)
        trim = trim_vocabulary(ctx, teacher_mlm, teacher) if config.model.trim_vocab else None
        data = ctx.data
        seeds = [config.seed + i for i in range(config.seeds)]
        contexts = language_contexts(ctx)
        models: dict[str, list[dict[str, nn.Module]]] = {"teacher": [{ALL: teacher}]}
        for v in run_variants(config):
            models[v.system] = [
                {lang: train_student(lctx, teacher_mlm, teacher, v.tag + ("" if lang == ALL else f"[{lang}]")
                                     + (f"[seed{s}]" if s != seeds[0] else ""), v.stage, s, v.model)
                 for lang, lctx in contexts.items()}
                for s in seeds]
        if not procs.is_main:  # training is shared; evaluation and the report are the main process's
            return {}
        languages, preds = evaluate_systems(ctx, models)
        systems = list(next(iter(languages.values())))
        average = {sys_: average_metrics({lang: row[sys_] for lang, row in languages.items()}) for sys_ in systems}
        students = models["student"][0]
        save_hf_model(teacher, data.tokenizer, work / "teacher")
        for lang, student in students.items():  # student/, or student/<lang>/ per language
            save_hf_model(student, data.tokenizer, work / "student" / ("" if lang == ALL else lang))
        student = next(iter(students.values()))
        results = {
            "afrocomet_version": __version__, "created": started, "labels": list(data.labels), "systems": systems,
            "languages": languages, "average": average,
            "retention": retention(average["student"], average["teacher"]),
            "efficiency": measure_efficiency(ctx, teacher, student),
            "stages": ctx.results, "truncated": data.truncated, "seeds": seeds, "device": str(device),
            "sampling": {"alpha": ctx.sampling_alpha, "search": ctx.alpha_search,
                         "per_language": len(students) > 1},
            "config": to_dict(config),
        }
        if trim is not None:
            results["vocab_trim"] = _student_trim(trim, student)
        results["wall_seconds"] = round(time.perf_counter() - t0, 1)
        write_predictions(ctx, preds, work)
        atomic_write_json(work / "results.json", results)
        write_report(results, work)
        atomic_write_text(work / "student" / "README.md", model_card(results))
    return results
