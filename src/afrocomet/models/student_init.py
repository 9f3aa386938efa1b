"""The choice of `model.student_init`: which modes fit a student and teacher, and the one that runs.

- random: the preset's own random weights (nothing here).
- teacher: a PCA projection of the teacher's weights (models/init.py); a student no wider than the teacher.
- layers: the teacher's embeddings and every k-th layer copied (models/layer_copy.py); the teacher's width.
"""

from __future__ import annotations

from torch import nn

from afrocomet.errors import AfroCometError
from afrocomet.models.init import INIT_MODES, init_from_teacher
from afrocomet.models.layer_copy import copy_layers, shape_problem


def init_problem(mode: str, student_config, teacher_config) -> str | None:
    """Why `mode` cannot initialise a student of this shape from this teacher, or None (the
    vocabulary is not checked here: it is known once the run's tokenizer is)."""
    if mode == "teacher" and student_config.hidden_size > teacher_config.hidden_size:
        return f"student hidden size {student_config.hidden_size} > teacher's {teacher_config.hidden_size}"
    if mode == "layers":
        return shape_problem(student_config, teacher_config)
    return None


def initialise(student: nn.Module, teacher: nn.Module, mode: str) -> dict:
    """`student` initialised from `teacher` by `mode` ("teacher": PCA, "layers": copied); what was done."""
    if mode == "teacher":
        return {"mode": mode, **init_from_teacher(student, teacher)}
    if mode == "layers":
        return {"mode": mode, **copy_layers(student, teacher)}
    raise AfroCometError(f"student_init={mode} does not initialise a student from a teacher (teacher and layers do)")


def compare_modes(current: str, student: str, teacher: str, trust_remote_code: bool = False) -> dict[str, str | None]:
    """The init modes a comparison trains besides `current`, in INIT_MODES order, each with why it
    cannot apply to this student and teacher (None: it can). Model names as in the run's config."""
    from afrocomet.models.build import model_config
    from afrocomet.models.presets import is_preset

    others = [mode for mode in INIT_MODES if mode != current]
    if not is_preset(student):
        return {mode: f"student {student} is a saved model: its own weights are kept" for mode in others}
    s_cfg, t_cfg = model_config(student), model_config(teacher, trust_remote_code)
    return {mode: init_problem(mode, s_cfg, t_cfg) for mode in others}


def compare_note(current: str, student: str, teacher: str, trust_remote_code: bool = False) -> dict:
    """What `--compare-init` trains and skips, as results.json records it: {"student_init": current,
    "compared": [modes], "skipped": {mode: why}}."""
    modes = compare_modes(current, student, teacher, trust_remote_code)
    return {"student_init": current, "compared": [mode for mode, problem in modes.items() if problem is None],
            "skipped": {mode: problem for mode, problem in modes.items() if problem is not None}}
