"""Pre-flight checks for distillation (`afrocomet doctor`): will it fit, and do the invariants hold?

- `preflight` (seconds, no data): the models' folders and weights, and every distillation stage's
  layer map and attention matching against the real layer counts and hidden sizes.
- `overfit_check`: the real training loop, a few steps on two batches, lowers the loss clearly
  and leaves the teacher untouched.
- `run_doctor(config)`: the memory estimate of every stage (distill/memory.py), then the KD
  invariants (distill/invariants.py) and the overfit check on small copies of its models.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from afrocomet.config import RunConfig, StageConfig, validate
from afrocomet.data.batching import Encoded, collate, encode
from afrocomet.device import resolve_device
from afrocomet.distill.invariants import Check, check_invariants, check_teacher_frozen, model_mode, prepare_batch
from afrocomet.distill.memory import estimate_memory, gib, memory_error
from afrocomet.distill.objective import HybridLoss, representation_only
from afrocomet.distill.trainer import train_stage
from afrocomet.errors import AfroCometError
from afrocomet.models.presets import is_preset
from afrocomet.quiet import warn
from afrocomet.tokenizer import tokenizer_for



# ----------------------------------------------------------------------------- overfit


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _weighted_loss(loss_fn: HybridLoss, student, teacher, batches, temperature: float) -> float:
    """Σ w·term over fixed batches, student in eval mode (no dropout: the same batches give the same value)."""
    with model_mode(student, train=False), torch.no_grad():
        total = 0.0
        for batch in batches:  # one forward per batch, every term from it
            terms = loss_fn.terms(student, teacher, batch, temperature)
            total += sum(float(w * terms[k]) for k, w in loss_fn.weights.items())
        return total


def overfit_check(student: nn.Module, teacher: nn.Module | None, tokenizer, stage_cfg: StageConfig, data: Encoded, *,
                  steps: int = 30, batch_size: int = 8, seed: int = 0, device: str | torch.device | None = None,
                  min_drop: float | None = None) -> list[Check]:
    """`steps` steps of the real loop (`train_stage`, lr at least 3e-3) on a copy of the student and
    2 batches: the weighted loss on those batches (fixed masks, eval mode, so no noise) must drop by
    `min_drop`, and the teacher must come out untouched (eval mode, frozen, no grads, same weights).

    Default `min_drop`: 30% for classification; 10% for masked LM, whose masks the loop redraws
    every step, so 30 steps get it to about the unigram entropy (-15 to -20% on tiny and demo sizes).
    """
    if min_drop is None:
        min_drop = 0.1 if stage_cfg.task == "mlm" else 0.3
    device = torch.device(device) if device is not None else next(student.parameters()).device
    bs = min(stage_cfg.batch_size, batch_size)
    two = data.subset(range(min(len(data), 2 * bs)))
    cfg = replace(stage_cfg, name=f"{stage_cfg.name}[overfit]", batch_size=bs, grad_accum=1, epochs=float(steps),
                  max_steps=steps, warmup_ratio=0.0, eval_every=0, patience=0, lr=max(stage_cfg.lr, 3e-3))
    model = copy.deepcopy(student).to(device)
    loss_fn = HybridLoss(cfg, model, teacher).to(device)
    fixed = [prepare_batch(collate(two, range(i, min(i + bs, len(two))), tokenizer.pad_token_id), tokenizer, cfg, device)
             for i in range(0, len(two), bs)]
    before_teacher = _snapshot(teacher) if teacher is not None else None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        first = _weighted_loss(loss_fn, model, teacher, fixed, cfg.temperature)
        train_stage(cfg, model, two, tokenizer=tokenizer, teacher=teacher, device=device, seed=seed, progress=False)
        last = _weighted_loss(loss_fn, model, teacher, fixed, cfg.temperature)
    ok = last <= (1 - min_drop) * first
    change = f"{100 * (last / first - 1):+.0f}%" if first else "n/a"
    checks = [Check("overfit 2 batches", ok, f"{steps} steps on 2 batches of {bs}: weighted loss {first:.4g} -> "
                    f"{last:.4g} ({change}; needs -{100 * min_drop:.0f}%)")]
    if teacher is not None:
        frozen = check_teacher_frozen(teacher)
        moved = [k for k, v in _snapshot(teacher).items() if not torch.equal(v, before_teacher[k])]
        detail = frozen.detail
        if moved:
            detail = f"training changed {len(moved)} teacher tensors, e.g. {moved[0]}; " + detail
        checks.append(Check("teacher untouched by the loop", frozen.ok and not moved, detail))
    return checks


# ----------------------------------------------------------------------------- pre-flight (seconds, no data)


def model_shape(name: str, trust_remote_code: bool = False):
    """The config (layers, sizes, vocab) of a preset or a saved model, without loading weights.

    A local folder must hold config.json and readable safetensors weights (their header is read,
    so a truncated file is caught here, not after the data and the teacher's training)."""
    from afrocomet.models.build import check_weights, looks_local
    from afrocomet.models.presets import get_preset

    if is_preset(name):
        return get_preset(name).to_config()
    if looks_local(name):
        check_weights(name)
    else:
        from afrocomet.models.hub import check_hub_id

        check_hub_id(name)  # no network: one line now, not half a minute of retries
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise AfroCometError(f"could not read the config of model {name!r} (a folder with config.json, or a Hub id "
                             f"reachable now): {str(exc).strip().splitlines()[0]}") from exc


def teacher_head_missing(config: RunConfig) -> list[str]:
    """The masked-LM head weights a local teacher folder lacks when a distill-mlm stage needs them
    (from the safetensors headers, seconds): such a stage runs representation-only
    (`objective.representation_only`), or cannot run at all without an attention term."""
    from afrocomet.models.build import looks_local, missing_head_weights

    name = config.model.teacher
    if is_preset(name) or not looks_local(name) or not any(s.kind == "distill-mlm" for s in config.stages):
        return []
    return missing_head_weights(name, "mlm", config.model.trust_remote_code)


def preflight(config: RunConfig, where: str = "config") -> dict:
    """What can be checked before any data is read or any step is trained: the models' folders
    and weights, and every distillation stage's layer map and attention matching against the real
    layer counts and hidden sizes. Returns {"teacher": config, "student": config}."""
    from afrocomet.distill.matching import build_matcher
    from afrocomet.models.attention import validate_layer_map

    m = config.model
    shapes = {role: model_shape(name, m.trust_remote_code) for role, name in (("teacher", m.teacher),
                                                                                ("student", m.student))}
    s, t = shapes["student"], shapes["teacher"]
    check_model_limits(config, shapes, where)
    missing = teacher_head_missing(config)
    for stage in (st for st in config.stages if st.kind == "distill-mlm" and missing):
        try:
            representation_only(stage, missing)
        except AfroCometError as exc:
            raise AfroCometError(f"{where}: {exc}") from None
    sizes = (f"(student {m.student}: {s.num_hidden_layers} layers, hidden {s.hidden_size}; "
             f"teacher {m.teacher}: {t.num_hidden_layers} layers, hidden {t.hidden_size})")
    for stage in (st for st in config.stages if st.distills):
        field = "layer_map"
        try:
            if stage.layer_map is not None:
                validate_layer_map(stage.layer_map, s.num_hidden_layers, t.num_hidden_layers)
            field = f"matching '{stage.matching}'"
            build_matcher(stage.matching, s, t, stage.layer_map, loss=stage.attention_loss,
                          relation_heads=stage.relation_heads)
        except AfroCometError as exc:
            raise AfroCometError(f"{where}: stage '{stage.name}' {field} {sizes}: {exc}") from None
    return shapes


def check_model_limits(config: RunConfig, shapes: dict, where: str = "config") -> None:
    """The settings that a model's size bounds, against the real sizes: `data.max_length` within each
    model's position table (`tokenizer.model_max_length`, what predict and evaluate allow), and
    `model.freeze_teacher_layers` within the teacher's layers."""
    from afrocomet.tokenizer import model_max_length

    m, n = config.model, config.data.max_length
    for role, name in (("teacher", m.teacher), ("student", m.student)):
        limit = model_max_length(shapes[role])
        if limit is not None and n > limit:
            raise AfroCometError(f"{where}: data.max_length is {n} but the {role} {name} holds {limit} tokens (its "
                                 f"position table); use --max-length {limit} or less")
    layers = shapes["teacher"].num_hidden_layers
    if m.freeze_teacher_layers > layers:
        raise AfroCometError(f"{where}: model.freeze_teacher_layers is {m.freeze_teacher_layers} but the teacher "
                             f"{m.teacher} has {layers} layers; use --freeze-teacher-layers {layers} or less")


def check_tokenizer_fits(config: RunConfig, tokenizer, shapes: dict) -> None:
    """A saved model's embedding must have a row for every token id the tokenizer can give."""
    for role in ("teacher", "student"):
        name = getattr(config.model, role)
        if not is_preset(name) and len(tokenizer) > shapes[role].vocab_size:
            raise AfroCometError(f"the tokenizer has {len(tokenizer)} tokens but the {role}'s embedding only "
                                 f"{shapes[role].vocab_size} (config.json vocab_size): this tokenizer does not "
                                 f"belong to this model", path=name)


# ----------------------------------------------------------------------------- a run config


def _train_texts(config: RunConfig, sample: int) -> tuple[list[str], list[int], tuple[str, ...]]:
    """A random sample of the training split: texts, label ids and label names."""
    from afrocomet.data.afrisenti import load_afrisenti, read_tsv
    from afrocomet.data.schema import LABELS

    d = config.data
    if d.train is not None:
        examples = read_tsv(d.train, labels=None)
    else:
        datasets = load_afrisenti(d.languages, d.data_dir, download=d.download, splits=("train",))
        examples = [ex for ds in datasets.values() for ex in ds.splits["train"]]
    found = {ex.label for ex in examples}
    names = LABELS if found == set(LABELS) else tuple(sorted(found))
    keep = np.random.default_rng(config.seed).permutation(len(examples))[:sample]
    chosen = [examples[i] for i in sorted(keep)]
    return [ex.text for ex in chosen], [names.index(ex.label) for ex in chosen], names


def _model_config(name: str, vocab_size: int, labels: tuple[str, ...], trust_remote_code: bool):
    """The full-size config a run would use: a preset's, or a saved model's config.json."""
    from afrocomet.models.presets import get_preset

    id2label = dict(enumerate(labels))
    if is_preset(name):
        return get_preset(name).to_config(vocab_size=vocab_size, num_labels=len(labels), id2label=id2label)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise AfroCometError(f"could not read the config of model {name!r} (a folder with config.json, or a Hub id "
                             f"reachable now): {str(exc).strip().splitlines()[0]}") from exc
    config.num_labels = len(labels)
    config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    return config


def _small_copy(config, layers: int, vocab_size: int | None):
    small = copy.deepcopy(config)
    small.num_hidden_layers = min(config.num_hidden_layers, layers)
    if vocab_size is not None:
        small.vocab_size = vocab_size
    return small


def _fits_layers(layer_map, student_layers: int, teacher_layers: int) -> bool:
    return layer_map is None or all(s < student_layers and t < teacher_layers for s, t in layer_map)


def run_doctor(config: RunConfig, *, device: str | None = None, sample: int = 2000, steps: int = 30,
               small_layers: tuple[int, int] = (2, 4)) -> list[Check]:
    """Memory estimates for every stage of `config` (AfroCometError if one cannot fit), then the
    invariants and the overfit test of every distillation stage on small random-weight copies of
    its models (at most `small_layers` = (student, teacher) layers; same widths, heads and vocab)
    and `sample` real training texts (the tokenizer of a preset teacher is trained on them)."""
    from afrocomet.models.build import build_model

    config = validate(config)
    shapes = preflight(config)
    missing = teacher_head_missing(config)
    if missing:
        config = _without_mlm_head(config, missing)
    dev = resolve_device(device or config.device)
    texts, labels, names = _train_texts(config, sample)
    tokenizer = tokenizer_for(config.model, texts)
    check_tokenizer_fits(config, tokenizer, shapes)
    m, seq_len = config.model, config.data.max_length
    full = {role: _model_config(name, m.vocab_size if is_preset(name) and is_preset(m.teacher) else len(tokenizer),
                                names, m.trust_remote_code)
            for role, name in (("teacher", m.teacher), ("student", m.student))}
    checks = []
    for stage in config.stages:
        trained = full["teacher"] if stage.trains_teacher else full["student"]
        teacher = full["teacher"] if stage.distills else None
        estimate = estimate_memory(trained, teacher, stage, seq_len, dev)
        if estimate["fits"] is False:
            raise memory_error(stage, estimate, estimate["total"])
        checks.append(Check("memory", True, f"about {gib(estimate['total'])} of {gib(estimate['available'])} free "
                            f"at batch {stage.batch_size} x {seq_len} tokens", stage.name))
    data = encode(tokenizer, texts, seq_len, labels=labels)
    for i, stage in enumerate(s for s in config.stages if s.distills):
        task = stage.task
        vocab = len(tokenizer) if is_preset(m.teacher) else None
        s_small = _small_copy(full["student"], small_layers[0], vocab)
        t_small = _small_copy(full["teacher"], small_layers[1], vocab)
        student = build_model(s_small, task, seed=config.seed + 2 * i).to(dev)
        teacher = build_model(t_small, task, seed=config.seed + 2 * i + 1).to(dev).eval().requires_grad_(False)
        if missing and stage.kind == "distill-mlm":
            teacher = teacher.base_model  # as the run: the encoder alone, no head to call
        if not _fits_layers(stage.layer_map, s_small.num_hidden_layers, t_small.num_hidden_layers):
            warn(f"doctor: stage '{stage.name}': the layer map {stage.layer_map} does not fit the small copies "
                 f"({s_small.num_hidden_layers} student, {t_small.num_hidden_layers} teacher layers), so their "
                 "invariants and overfit check use the uniform map; the full models' map was checked in the "
                 "pre-flight")
            stage = replace(stage, layer_map=None)
        batch = collate(data, range(min(stage.batch_size, 8)), tokenizer.pad_token_id)
        found = check_invariants(student, teacher, tokenizer, stage, batch)
        found += overfit_check(student, teacher, tokenizer, stage, data, steps=steps, seed=config.seed)
        checks += [replace(c, stage=stage.name) for c in found]
    if missing:
        checks.insert(0, Check("teacher masked-LM head", True, f"missing ({len(missing)} weights, e.g. {missing[0]}): "
                               "representation-only (kd_weight 0, attention + MLM labels), encoder only", "distill-mlm"))
    return checks


def _without_mlm_head(config: RunConfig, missing: list[str]) -> RunConfig:
    """`config` with its distill-mlm stages representation-only, as `afrocomet run` would run them."""
    from afrocomet.quiet import warn

    stages = [representation_only(s, missing) if s.kind == "distill-mlm" else s for s in config.stages]
    warn(f"teacher {config.model.teacher} has no masked-LM head ({len(missing)} weights missing, e.g. {missing[0]}): "
         "the doctor checks stage 1 as the run will run it, representation-only (no KD on MLM logits)")
    return replace(config, stages=stages)


def format_checks(checks: list[Check]) -> str:
    """A plain-text table: stage, check, ok/FAIL, detail."""
    rows = [("stage", "check", "result", "detail")] + [(c.stage, c.name, "ok" if c.ok else "FAIL", c.detail) for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows)
