"""The CLI: one line + exit 2 for bad input, presets JSON, flags mapping to config fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from afrocomet.cli import _resolve_config, main


def test_presets_json_counts_from_built_models(capsys):
    assert main(["presets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["comet"]["parameters"] == 68937216
    assert rows["afroxlmr-large"]["parameters"] == 559890432
    assert {"demo-teacher", "demo-student", "tiny-teacher", "tiny-student"} <= set(rows)


def test_presets_table(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "68,937,216" in out and "559,890,432" in out


def test_console_script_bad_config_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - name: s\n    batch_size: -4\n", encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "afrocomet", "distill", "--config", str(bad), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "batch_size must be > 0" in lines[0]
    assert not out.exists()


def _opts(**over):
    """Every option of `afrocomet run` at its unset value (as click passes it), then `over`."""
    from afrocomet.cli import run as run_command

    def unset(p):
        if p.multiple:
            return ()
        return p.default if isinstance(p.default, (bool, type(None))) else (False if p.is_flag else None)

    base = {p.name: unset(p) for p in run_command.params if p.name != "config_file"}
    base.update(quiet=True, **over)
    return base


def test_flags_map_to_config_fields(tmp_path):
    config = _resolve_config(None, _opts(out=tmp_path / "o", languages=("hau,swa",), seeds=3, temperature=4.0,
                                         matching="relations", layer_map="0:1,1:3", kd_weight=0.5, seed=7,
                                         no_ablations=True, data_dir=Path("/data")))
    assert config.out == str(tmp_path / "o") and config.data.languages == ["hau", "swa"]
    assert config.seeds == 3 and config.seed == 7 and config.ablations is False and config.data.data_dir == "/data"
    distill = [s for s in config.stages if s.kind.startswith("distill")]
    assert distill and all(s.temperature == 4.0 and s.matching == "relations" and s.kd_weight == 0.5 for s in distill)
    assert all(s.layer_map == [[0, 1], [1, 3]] for s in distill)
    teacher = [s for s in config.stages if s.kind.startswith("teacher")]
    assert all(s.temperature == 2.0 for s in teacher)  # flags for distillation only touch distillation stages


def test_init_and_cache_flags_map_to_config_fields():
    config = _resolve_config(None, _opts(quick=True))
    assert config.model.student_init == "random" and not config.compare_init
    assert all(s.teacher_cache for s in config.stages)
    config = _resolve_config(None, _opts(quick=True, student_init="teacher", compare_init=True, no_teacher_cache=True))
    assert config.model.student_init == "teacher" and config.compare_init
    assert not any(s.teacher_cache for s in config.stages)


@pytest.mark.parametrize("flag, value, needle", [("temperature", 0.0, "temperature must be > 0"),
                                                  ("layer_map", "0-1", "--layer-map")])
def test_bad_flags(flag, value, needle, capsys):
    from afrocomet.errors import AfroCometError

    with pytest.raises(AfroCometError, match=needle):
        _resolve_config(None, _opts(**{flag: value}))
