"""Config: strict YAML in (unknown keys, wrong types, bad values -> file:line errors), YAML out."""

from __future__ import annotations

import pytest

from afrocomet.config import RunConfig, StageConfig, from_dict, load_config, save_config, to_dict, validate
from afrocomet.errors import AfroCometError


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip(tmp_path):
    config = RunConfig(seed=3, stages=[StageConfig(name="s1", kind="distill-mlm", temperature=4.0)])
    config.data.languages = ["hau", "swa"]
    path = save_config(config, tmp_path / "c.yaml")
    again = load_config(path)
    assert to_dict(again) == to_dict(config)


def test_int_is_accepted_for_float(tmp_path):
    config = load_config(write(tmp_path, "stages:\n  - name: a\n    lr: 1\n"))
    assert config.stages[0].lr == 1.0 and isinstance(config.stages[0].lr, float)


@pytest.mark.parametrize(
    "text, line, needle",
    [
        ("seed: 1\nbogus: 2\n", 2, "unknown key 'bogus'"),
        ("data:\n  languages: [hau]\n  max_lenght: 64\n", 3, "unknown key 'max_lenght' in data"),
        ("seed: one\n", 1, "'seed' must be an integer"),
        ("stages:\n  - name: a\n    batch_size: 0\n", None, "batch_size must be > 0"),
        ("stages:\n  - name: a\n    temperature: -1\n", None, "temperature must be > 0"),
        ("stages:\n  - name: a\n    kind: distil\n", None, "unknown kind 'distil'"),
        ("lr_factors: [1, 0]\n", None, "lr_factors entry must be > 0"),
        ("lr_factors: [1, 1000]\n", None, "must be at most 100"),
        ("jobs: 0\n", None, "jobs must be > 0"),
        ("stages:\n  - name: a\n    matching: full\n", None, "unknown matching 'full'"),
        ("data:\n  languages: [xyz]\n", None, "unknown language(s) xyz"),
        ("stages: 3\n", 1, "'stages' must be a list"),
        ("seed: [1\n", 2, "invalid YAML"),
        ("model:\n  trust_remote_code: yes please\n", 2, "must be true or false"),
    ],
)
def test_bad_config(tmp_path, text, line, needle):
    path = write(tmp_path, text)
    with pytest.raises(AfroCometError) as info:
        load_config(path)
    message = str(info.value)
    assert needle in message
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}:" in message
    assert "\n" not in message


def test_missing_config_file(tmp_path):
    with pytest.raises(AfroCometError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_duplicate_stage_names():
    with pytest.raises(AfroCometError, match="unique"):
        validate(RunConfig(stages=[StageConfig(name="a"), StageConfig(name="a")]))


def test_from_dict_custom_data_allows_any_language_name():
    config = from_dict({"data": {"train": "t.tsv", "test": "x.tsv", "languages": ["mine"]}})
    assert config.data.languages == ["mine"]


def test_relation_heads_default_is_what_config_py_says():
    """config.py: None = the teacher's head count if it divides both hidden sizes, else the student's, ..."""
    from types import SimpleNamespace

    from afrocomet.distill.matching import build_matcher

    def cfg(hidden, heads):
        return SimpleNamespace(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=2)

    assert build_matcher("relations", cfg(32, 2), cfg(64, 4)).relation_heads == 4  # the teacher's, not the student's
    assert build_matcher("relations", cfg(36, 3), cfg(64, 4)).relation_heads == 4  # 4 divides 36 and 64
    assert build_matcher("relations", cfg(30, 3), cfg(64, 4)).relation_heads == 2  # neither: largest common divisor


@pytest.mark.parametrize("kind,task,distills,trains_teacher", [
    ("teacher-pretrain", "mlm", False, True), ("teacher-finetune", "classification", False, True),
    ("distill-mlm", "mlm", True, False), ("distill-task", "classification", True, False),
    ("student-finetune", "classification", False, False)])
def test_a_stage_knows_its_task_and_whether_it_reads_a_teacher(kind, task, distills, trains_teacher):
    stage = StageConfig(kind=kind)
    assert (stage.task, stage.distills, stage.trains_teacher) == (task, distills, trains_teacher)
    assert stage.reads_teacher is distills  # kd and attention weights 1 by default
    assert StageConfig(kind=kind, kd_weight=0.0, attention_weight=0.0).reads_teacher is False
    assert StageConfig(kind=kind, kd_weight=0.0).reads_teacher is distills


def test_renamed_keys_are_read_with_one_warning_and_not_beside_the_new_name(tmp_path, recwarn):
    """`log_every` (now `progress_every`) and `alpha_search_steps` (now `probe_steps`) in an older
    config.yaml still load, each with a warning; the old and the new name together are an error."""
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  alpha_search_steps: 7\nstages:\n  - {name: s, kind: distill-task, log_every: 3}\n",
                    encoding="utf-8")
    config = load_config(path)
    assert config.data.probe_steps == 7 and config.stages[0].progress_every == 3
    said = sorted(str(w.message) for w in recwarn if "is now" in str(w.message))
    assert len(said) == 2 and "'alpha_search_steps' is now 'probe_steps'" in said[0]
    path.write_text("stages:\n  - {name: s, kind: distill-task, log_every: 3, progress_every: 4}\n", encoding="utf-8")
    with pytest.raises(AfroCometError, match="old name of 'progress_every'.*keep one") as err:
        load_config(path)
    assert err.value.line == 2
