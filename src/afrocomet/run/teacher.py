"""Teacher preparation: the masked-LM teacher for stage 1 and the classification teacher for stage 2
(built and trained here for presets, loaded otherwise), vocabulary trimming, and the model helpers
the run shares (a new head on the same encoder, a Hugging Face folder)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from afrocomet.config import RunConfig, StageConfig
from afrocomet.data.corpus import read_extra_text
from afrocomet.errors import AfroCometError
from afrocomet.models.presets import is_preset
from afrocomet.run.context import Context
from afrocomet.run.inputs import prepare_data

log = logging.getLogger("afrocomet")


@dataclass
class Teachers:
    """The teachers as built or loaded, before any fine-tuning: `mlm` for stage 1 (None without a
    distill-mlm stage), `cls` for stage 2, the `finetune` stage they still need (None: none or a head
    already trained), and the run's `stages` and `notes` as the teacher requires them (a teacher without
    a masked-LM head: stage 1 representation-only). run/steps.py puts `stages` and `notes` into the run."""

    mlm: nn.Module | None
    cls: nn.Module
    finetune: StageConfig | None
    stages: list[StageConfig]
    notes: dict | None = None


def build_teachers(ctx: Context) -> Teachers:
    """Teacher preparation up to fine-tuning: a preset is built (and pretrained, if the run has that
    stage); a Hub id or folder is loaded. Changes nothing in `ctx` but the results of the stages it trains."""
    from afrocomet.models.build import build_model, load_pretrained, missing_head
    from afrocomet.models.presets import get_preset

    m, vocab = ctx.config.model, len(ctx.data.tokenizer)
    labels = ctx.id2label
    pretrain, finetune = _stage(ctx.config, "teacher-pretrain"), _stage(ctx.config, "teacher-finetune")
    need_mlm = _stage(ctx.config, "distill-mlm") is not None
    stages, notes = list(ctx.config.stages), None
    if is_preset(m.teacher):
        mlm = build_model(get_preset(m.teacher), "mlm", vocab_size=vocab, seed=ctx.config.seed)
        if pretrain is not None:
            ctx.train(pretrain, mlm)
        cls = convert_head(mlm, "classification", len(labels), labels)
    else:
        mlm, stages, notes = _stage1_teacher(ctx.config) if need_mlm else (None, stages, None)
        cls, info = load_pretrained(m.teacher, "classification", num_labels=len(labels), id2label=labels,
                                    trust_remote_code=m.trust_remote_code, output_loading_info=True)
        if has_task_head(m.teacher, labels, m.trust_remote_code):
            log.info("teacher %s already has a %d-class head: fine-tuning skipped", m.teacher, len(labels))
            finetune = None
        _check_task_head(ctx.config, missing_head(cls, info["missing_keys"]), finetune)
    return Teachers(mlm, cls, finetune, stages, notes)


def finetune_teacher(ctx: Context, teachers: Teachers) -> tuple[nn.Module | None, nn.Module]:
    """Fine-tune the classification teacher (when it needs it); both teachers frozen, in eval mode."""
    if teachers.finetune is not None:
        ctx.train(teachers.finetune, teachers.cls)
    for model in (teachers.mlm, teachers.cls):
        if model is not None:
            model.eval().requires_grad_(False)
    return teachers.mlm, teachers.cls


def _check_task_head(config: RunConfig, missing: list[str], finetune: StageConfig | None) -> None:
    """A classification head missing from the teacher's folder is expected and trained by teacher
    fine-tuning (a missing pooler is trained with it); without that stage it would stay random, so
    a distillation stage with KD on its logits stops here in one line."""
    reads = [s.name for s in config.stages if s.kind == "distill-task" and s.kd_weight > 0]
    if missing and finetune is None and reads:
        raise AfroCometError(f"teacher {config.model.teacher} has no trained classification head ({missing[0]} "
                             f"is missing) and the run has no teacher-finetune stage: {', '.join(reads)} would distil "
                             "from a random head; add a teacher-finetune stage")


def _stage1_teacher(config: RunConfig) -> tuple[nn.Module, list[StageConfig], dict | None]:
    """The pretrained teacher of stage 1 (distill-mlm), the run's stages for it, and notes for
    results.json. When its folder lacks the masked-LM head (transformers would initialise it at
    random, e.g. an embedding model like multilingual-e5), stage 1 runs representation-only
    (`representation_only`: no KD on MLM logits, attention and the student's MLM labels stay) against
    the encoder alone, so no random head is ever used; a warning says so, and the notes
    (results.json/report.md) record it."""
    from afrocomet.distill.objective import representation_only
    from afrocomet.models.build import load_pretrained, missing_head
    from afrocomet.quiet import warn

    m = config.model
    mlm, info = load_pretrained(m.teacher, "mlm", trust_remote_code=m.trust_remote_code, output_loading_info=True)
    missing = missing_head(mlm, info["missing_keys"])
    if not missing:
        return mlm, list(config.stages), None
    stages = [representation_only(s, missing) if s.kind == "distill-mlm" else s for s in config.stages]
    names = [s.name for s in stages if s.kind == "distill-mlm"]
    warn(f"teacher {m.teacher} has no masked-LM head ({len(missing)} weights missing, e.g. {missing[0]}): "
         f"{', '.join(names)} runs as representation-only distillation (attention + the student's MLM labels, "
         "no KD on MLM logits); the teacher's encoder alone is used, never a random head")
    notes = {"mlm_head": "missing", "missing_weights": len(missing), "missing_example": missing[0],
             "representation_only": names, "kd_weight": 0.0}
    return mlm.base_model, stages, notes  # the encoder alone: no head is left to call


def _stage(config: RunConfig, kind: str) -> StageConfig | None:
    return next((s for s in config.stages if s.kind == kind), None)


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


def trim_vocabulary(ctx: Context, teacher_mlm: nn.Module | None, teacher_cls: nn.Module):
    """Keep the vocabulary rows the training text (train tweets + extra text) uses, in both teachers
    with the same ids (in place). Returns the run's data re-encoded with the trimmed tokenizer, the old
    ids kept (students are built at, or from a folder trimmed to, the new size) and the numbers for
    results.json; run/steps.py puts the first two into the run."""
    from afrocomet.models.vocab import trim_together

    texts = [t for ds in ctx.data.datasets.values() for t in ds.texts("train")]
    texts += read_extra_text(ctx.config.data.extra_text)
    models = {"teacher": teacher_cls, **({"teacher_mlm": teacher_mlm} if teacher_mlm is not None else {})}
    tokenizer, keep, reports = trim_together(models, ctx.data.tokenizer, texts)
    data = prepare_data(ctx.config, ctx.data.datasets, tokenizer)
    r = reports["teacher"]
    log.info("vocabulary trimmed before teacher fine-tuning: %s", r.summary())
    # two different shares: of the vocabulary's rows, and of the training text's token occurrences
    return data, keep, {
        "rows_kept": r.rows_kept, "rows_total": r.rows_total, "rows_kept_fraction": r.rows_kept / r.rows_total,
        "token_coverage": r.kept_fraction, "texts": r.texts, "when": "before teacher fine-tuning",
        "teacher": {"parameters_before": r.parameters_before, "parameters_after": r.parameters_after}}


def freeze_teacher(model: nn.Module, embeddings: bool, layers: int) -> dict:
    """Freeze the embeddings and/or the lowest `layers` layers of `model` for its fine-tuning: they
    get no gradient and no optimizer state. Returns what is frozen and the parameters still trained."""
    from afrocomet.models.build import count_parameters

    base = model.base_model
    blocks = getattr(getattr(base, "encoder", None), "layer", None)
    if layers and blocks is None:
        raise AfroCometError(f"cannot freeze teacher layers: {type(model).__name__} has no encoder.layer list")
    if blocks is not None and layers > len(blocks):  # all of them: only the head is trained
        log.info("model.freeze_teacher_layers is %d but the teacher has %d layers: all are frozen", layers, len(blocks))
        layers = len(blocks)
    if embeddings:
        (getattr(base, "embeddings", None) or model.get_input_embeddings()).requires_grad_(False)
    for block in list(blocks or [])[:layers]:
        block.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"embeddings": embeddings, "layers": layers, "of_layers": len(blocks) if blocks is not None else None,
            "parameters": count_parameters(model), "trainable_parameters": trainable}


def student_trim(trim: dict, student: nn.Module) -> dict:
    """The student's parameters now and with the untrimmed vocabulary (only word-embedding rows differ)."""
    from afrocomet.models.build import count_parameters

    after = count_parameters(student)
    removed = (trim["rows_total"] - trim["rows_kept"]) * student.config.hidden_size
    return {**trim, "student": {"parameters_before": after + removed, "parameters_after": after}}


def save_hf_model(model: nn.Module, tokenizer, out_dir: Path) -> Path:
    """A standard Hugging Face folder (config.json with id2label, model.safetensors, tokenizer files)."""
    from afrocomet.io import atomic_dir
    from afrocomet.quiet import no_progress_bars
    from afrocomet.tokenizer import write_tokenizer

    with atomic_dir(out_dir) as tmp:
        with no_progress_bars():  # one shard of a small model: no bar needed
            model.save_pretrained(tmp)  # safetensors
        write_tokenizer(tokenizer, tmp, model.config)  # with model_max_length
    return out_dir


def check_teacher(ctx: Context, teacher: nn.Module) -> dict:
    """The teacher's dev weighted F1 against the majority baseline's (per language and averaged over
    languages); a teacher no better than the majority says so loudly (one warning line). Its dev logits
    come through `run.dev.dev_logits` (those of its fine-tuning's last evaluation when that was its best)."""
    import numpy as np
    from sklearn.metrics import f1_score

    from afrocomet.evaluate import majority_baseline
    from afrocomet.quiet import warn
    from afrocomet.run.dev import dev_logits

    logits = dev_logits(teacher, ctx.data.dev, ctx.pad_id, ctx.device)
    per = {}
    for lang, data in ctx.data.dev.items():
        gold = list(data.labels)
        pred = logits[lang].argmax(-1)
        majority = majority_baseline(ctx.data.datasets[lang].label_ids("train"), len(gold))
        per[lang] = {"teacher": float(f1_score(gold, pred, average="weighted")),
                     "majority": float(f1_score(gold, majority, average="weighted"))}
    teacher_f1 = float(np.mean([v["teacher"] for v in per.values()]))
    majority_f1 = float(np.mean([v["majority"] for v in per.values()]))
    below = teacher_f1 <= majority_f1 + 1e-9
    if below:
        warn(f"the teacher scores no better than the majority baseline on dev (weighted F1 {100 * teacher_f1:.2f} "
             f"vs {100 * majority_f1:.2f}): it learnt nothing, so retention figures mean nothing; check the "
             "teacher-finetune stage (learning rate, steps)")
    return {"teacher": teacher_f1, "majority": majority_f1, "per_language": per, "below_majority": below}
