"""Default budgets: the paper's stages and the run configs `afrocomet run` starts from (built-in
default, its --quick variant, and the paper's setting with a pretrained teacher)."""

from __future__ import annotations

from afrocomet.config import RunConfig, StageConfig, validate
from afrocomet.models.presets import is_preset


QUICK_TRAIN_ROWS, QUICK_DEV_ROWS = 1500, 300  # --quick (built-in default): rows per language


def default_stages(quick: bool = False, pretrained_teacher: bool = False) -> list[StageConfig]:
    """The paper's stages with budgets that fit the built-in default on 2 CPU cores (15 min), or
    (`pretrained_teacher`) a pretrained teacher fine-tuned on a CPU (see `pretrained_stages`)."""
    if pretrained_teacher:
        return pretrained_stages(quick)
    if quick:
        common = dict(batch_size=32, max_steps=12, progress_every=4, lr=2e-3, eval_every=6)  # two dev evaluations a stage
        return [
            StageConfig(name="teacher-pretrain", kind="teacher-pretrain", epochs=1, **common),
            StageConfig(name="teacher-finetune", kind="teacher-finetune", epochs=1, **common),
            StageConfig(name="stage1", kind="distill-mlm", epochs=1, **common),
            StageConfig(name="stage2", kind="distill-task", epochs=1, **common),
        ]
    # the built-in default: every budget sized so the whole run fits 15 minutes on 2 CPU cores with the
    # install. The teacher's share was cut on dev (benchmarks/README.md, default_run.py): 100 pretraining
    # steps instead of 300 and 800 fine-tuning steps instead of 1,200 left every student row's best dev
    # score where it was (hybrid 67.27 vs 67.23, the paper's 65.96 vs 66.05, KD only 66.59 vs 66.86, labels
    # only 66.18 both) for 3.7 minutes less; the transformer teacher itself fell (dev 59.5 vs 63.7) and the
    # combined teacher's mean dev score by 0.3 (the n-gram model carries it)
    return [
        StageConfig(name="teacher-pretrain", kind="teacher-pretrain", max_steps=100, batch_size=64, lr=5e-4,
                    warmup_ratio=0.1, patience=0, eval_every=100),
        # dev every 400 steps (2 evaluations, the best kept): one teacher evaluation of the five dev sets
        # takes ~17 s on 2 idle cores (the student's ~1.3 s), so the teacher evaluates least often
        StageConfig(name="teacher-finetune", kind="teacher-finetune", epochs=2.5, max_steps=800, batch_size=32,
                    lr=3e-4, patience=2, eval_every=400),
        StageConfig(name="stage1", kind="distill-mlm", max_steps=150, batch_size=64, lr=1e-3, temperature=2.0,
                    patience=0, eval_every=50),  # minus the MLM loss on 512 dev texts: well under a second
        StageConfig(name="stage2", kind="distill-task", epochs=1.0, batch_size=32, lr=1e-3, temperature=2.0,
                    patience=3, eval_every=250),  # ~1,190 steps on the five languages: 5 evaluations
    ]


def pretrained_stages(quick: bool = False) -> list[StageConfig]:
    """Budgets for a pretrained teacher (e.g. multilingual-e5-small, 118M parameters) on a CPU.

    Fine-tuning a pretrained encoder wants a small learning rate (2e-5..1e-4; the 2e-3 of the built-in
    --quick left e5 at exactly the majority baseline). With --quick (a few minutes on 2 CPU cores,
    most of it the teacher's fine-tuning at ~1 s a step with its lower layers frozen): 80 steps of
    16 texts at 1e-4 (the frozen lower layers keep the pretrained features; the new head needs the
    larger rate to move in 80 steps), then short distillation stages."""
    if quick:
        return [
            StageConfig(name="teacher-finetune", kind="teacher-finetune", max_steps=80, batch_size=16, lr=1e-4,
                        warmup_ratio=0.1, patience=0, eval_every=80, progress_every=10),
            StageConfig(name="stage1", kind="distill-mlm", max_steps=12, batch_size=32, lr=5e-4, patience=0,
                        eval_every=12, progress_every=4),
            StageConfig(name="stage2", kind="distill-task", max_steps=40, batch_size=32, lr=5e-4, patience=0,
                        eval_every=40, progress_every=10),
        ]
    # two epochs of fine-tuning at 8e-5 (dev every 200 steps, the best kept): on the five full training
    # sets ~2,400 steps, 1-2 hours on 2 CPU cores for e5-small; `data.train_rows` makes it smaller
    # (benchmarks/pretrained_teacher.py: 1,500 rows a language). Stage 2 reads the teacher's cached outputs,
    # so its two epochs cost student steps only.
    return [
        StageConfig(name="teacher-finetune", kind="teacher-finetune", epochs=2, batch_size=32, lr=8e-5,
                    warmup_ratio=0.1, patience=2, eval_every=200),
        StageConfig(name="stage1", kind="distill-mlm", max_steps=300, batch_size=32, lr=5e-4, temperature=2.0,
                    patience=0, eval_every=150),
        StageConfig(name="stage2", kind="distill-task", epochs=2, batch_size=32, lr=5e-4, temperature=2.0,
                    patience=3, eval_every=200),
    ]


def default_config(quick: bool = False, teacher: str | None = None) -> RunConfig:
    """The built-in default (demo presets, tokenizer trained here), its --quick variant, or the
    paper's setting when `teacher` names a pretrained model (comet student, teacher's tokenizer,
    trimmed vocabulary, embeddings frozen while the teacher is fine-tuned, 64-token texts)."""
    config = RunConfig(quick=quick)
    if teacher is not None and not is_preset(teacher):
        config.model.teacher = teacher
        config.model.student = "comet"
        config.model.trim_vocab = True  # AfriSenti text uses a small part of XLM-R's 250,002 pieces
        config.model.freeze_teacher_embeddings = True  # the trimmed rows keep their pretrained values
        config.model.freeze_teacher_layers = 6 if quick else 0  # --quick: the lower half of a 12-layer teacher
        config.data.max_length = 64  # tweets: few are longer (the report counts the truncated ones)
        config.stages = default_stages(quick, pretrained_teacher=True)
    else:
        if quick:
            config.model.teacher, config.model.student, config.model.vocab_size = "tiny-teacher", "tiny-student", 1000
            config.model.tokenizer_sample = 3000
            config.data.max_length = 64
            # a seeded sample of each language (stratified by label): the n-gram teacher's fits on all
            # 38k training tweets and each dev evaluation of all 8k dev tweets were most of a quick run
            config.data.train_rows, config.data.dev_rows = QUICK_TRAIN_ROWS, QUICK_DEV_ROWS
            config.ablations = True
        else:
            if teacher is not None:
                config.model.teacher = teacher
            # what the default run at 735a9a0 chose on dev, fixed to save probes (~1 min of the 15):
            # language-sampling alpha 0.5 (probes' mean dev weighted F1 0.53, against 0.46 at 0.3 and 0.42
            # at 1), and stage 2's lr among 1 and 3 times the stage's (at a third, every row's probe ended
            # at the majority class); `--alpha-candidates` and `--lr-factors` search wider
            config.data.alpha_candidates = []
            config.lr_factors = [1.0, 3.0]
        config.stages = default_stages(quick)
    return validate(config)
