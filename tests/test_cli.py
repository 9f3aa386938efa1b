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


RUN_FLAGS = {  # the flags of `afrocomet run` / `distill` as users know them: names never change silently
    "--config", "--out", "--quick", "--languages", "-l", "--teacher", "--student", "--data-dir", "--train", "--dev",
    "--test", "--extra-text", "--seed", "--seeds", "--device", "--kd-weight", "--attention-weight", "--hard-weight",
    "--temperature", "--matching", "--attention-loss", "--adaptive", "--layer-map", "--per-language",
    "--sampling-alpha", "--alpha-candidates", "--compare-adaptive", "--no-ablations", "--student-init",
    "--compare-init", "--no-teacher-cache", "--trust-remote-code", "--trim-vocab", "--no-trim-vocab", "--overwrite",
    "--max-length", "--normalize", "--freeze-teacher-embeddings", "--no-freeze-teacher-embeddings",
    "--freeze-teacher-layers", "--threads", "--train-rows", "--dev-rows", "--ngram-teacher", "--no-ngram-teacher",
    "--no-frozen-cache", "--lr-factors", "--jobs",
    "--quiet", "--num-processes", "--resume", "--help", "-h"}


@pytest.mark.parametrize("command", ["run", "distill"])
def test_run_flags_keep_their_names(command):
    from afrocomet.cli import cli

    params = cli.commands[command].params
    flags = {flag for p in params for flag in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    assert flags == RUN_FLAGS


def _stage_values(config, name):
    return {json.dumps(getattr(s, name)) for s in config.stages if s.kind.startswith("distill")}


@pytest.mark.parametrize("argv, read, expected", [
    (["-l", "hau", "--languages", "yor,swa"], lambda c: c.data.languages, ["hau", "yor", "swa"]),
    (["--teacher", "some/model"], lambda c: c.model.teacher, "some/model"),
    (["--student", "comet"], lambda c: c.model.student, "comet"),
    (["--train", "a.tsv", "--dev", "b.tsv", "--test", "c.tsv"], lambda c: (c.data.train, c.data.dev, c.data.test),
     ("a.tsv", "b.tsv", "c.tsv")),
    (["--extra-text", "a,b.txt", "--extra-text", "c.txt"], lambda c: c.data.extra_text, ["a,b.txt", "c.txt"]),
    (["--device", "cpu"], lambda c: c.device, "cpu"),
    (["--attention-weight", "0", "--hard-weight", "2"],
     lambda c: (_stage_values(c, "attention_weight"), _stage_values(c, "hard_weight")), ({"0.0"}, {"2.0"})),
    (["--attention-loss", "mse", "--adaptive", "magnitude"],
     lambda c: (_stage_values(c, "attention_loss"), _stage_values(c, "adaptive")), ({'"mse"'}, {'"magnitude"'})),
    (["--per-language", "--compare-init", "--trust-remote-code"],
     lambda c: (c.data.per_language, c.compare_init, c.model.trust_remote_code), (True, True, True)),
    (["--sampling-alpha", "0.7"], lambda c: (c.data.sampling_alpha, c.data.alpha_candidates), (0.7, [])),
    (["--sampling-alpha", "0.7", "--alpha-candidates", "0,1"], lambda c: c.data.alpha_candidates, [0.0, 1.0]),
    (["--alpha-candidates", ""], lambda c: c.data.alpha_candidates, []),
    (["--lr-factors", "1"], lambda c: c.lr_factors, [1.0]),
    (["--jobs", "2"], lambda c: c.jobs, 2),
    ([], lambda c: c.jobs, None),
    (["--lr-factors", ""], lambda c: c.lr_factors, []),
    ([], lambda c: c.lr_factors, [1 / 3, 1.0, 3.0]),
    (["--compare-adaptive", "uncertainty"], lambda c: c.compare_adaptive, "uncertainty"),
    (["--trim-vocab"], lambda c: c.model.trim_vocab, True),
    (["--teacher", "some/model", "--no-trim-vocab"], lambda c: c.model.trim_vocab, False),
    (["--teacher", "some/model"], lambda c: c.model.trim_vocab, True),  # unset: the default config's choice
])
def test_every_flag_reaches_its_field(argv, read, expected):
    from afrocomet.cli import run

    params = run.make_context("run", ["--quick", *argv]).params
    assert read(_resolve_config(params.pop("config_file"), params)) == expected


def test_flags_override_a_config_file_and_leave_the_rest(tmp_path):
    from afrocomet.cli import run
    from afrocomet.config import save_config
    from afrocomet.run import default_config

    config = default_config(quick=True)
    config.out, config.seed, config.data.languages = str(tmp_path / "from-file"), 5, ["yor"]
    save_config(config, tmp_path / "c.yaml")
    params = run.make_context("run", ["--config", str(tmp_path / "c.yaml"), "--seed", "9"]).params
    resolved = _resolve_config(params.pop("config_file"), params)
    assert resolved.seed == 9 and resolved.out == str(tmp_path / "from-file") and resolved.data.languages == ["yor"]


@pytest.mark.parametrize("command", [["run"], ["distill"], ["doctor"]])
def test_quick_with_a_config_file_is_refused_in_one_line(tmp_path, capsys, command):
    """--quick used to be ignored beside --config (RunConfig.quick did nothing): now it is refused."""
    from afrocomet.config import save_config
    from afrocomet.run import default_config

    save_config(default_config(), tmp_path / "c.yaml")
    out = tmp_path / "out"
    argv = [*command, "--quick", "--config", str(tmp_path / "c.yaml")]
    argv += ["--out", str(out)] if command != ["doctor"] else []
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("afrocomet: error: --quick cannot be combined with --config")
    assert str(tmp_path / "c.yaml") in err[0] and "afrocomet config --quick" in err[0]
    assert not out.exists()


def test_quick_with_resume_is_refused(tmp_path, capsys):
    from afrocomet.config import save_config
    from afrocomet.run import default_config

    partial = tmp_path / "r.partial"
    partial.mkdir()
    config = default_config(quick=True)
    config.out = str(tmp_path / "r")
    save_config(config, partial / "config.yaml")
    assert main(["run", "--quick", "--resume", str(partial)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--quick cannot be combined with --resume" in err[0]
    assert sorted(p.name for p in partial.iterdir()) == ["config.yaml"]


def test_quick_alone_still_builds_the_quick_variant():
    config = _resolve_config(None, _opts(quick=True))
    assert config.quick is True and config.model.teacher == "tiny-teacher" and config.out == "runs/quick"


def test_sigterm_where_python_ignores_exceptions_is_asked_again(monkeypatch):
    """SIGTERM landing in a `__del__` (or the import system's module-lock callback) would raise where
    Python only prints "Exception ignored" and the run would go on: the handler re-sends it instead,
    and anywhere else it raises `Terminated` (exit 143) at once."""
    import signal
    import types

    from afrocomet import cli as cli_module

    sent = []
    monkeypatch.setattr(cli_module.threading, "Timer",
                        lambda delay, fn, args: types.SimpleNamespace(start=lambda: sent.append((fn, args))))

    class Dropped:
        def __del__(self):
            cli_module._exit_on_sigterm(signal.SIGTERM, sys._getframe())

    Dropped()
    assert sent == [(cli_module.os.kill, (cli_module.os.getpid(), signal.SIGTERM))]
    with pytest.raises(cli_module.Terminated) as raised:
        cli_module._exit_on_sigterm(signal.SIGTERM, sys._getframe())
    assert raised.value.code == 143 and len(sent) == 1


def test_an_internal_error_is_a_traceback_not_a_user_error(monkeypatch):
    """A broken internal contract (InternalError) is a bug: `main` does not turn it into the one-line
    user error with exit 2, so its traceback reaches the user and the bug report."""
    from afrocomet.cli import data_cmds
    from afrocomet.errors import AfroCometError, InternalError

    assert not issubclass(InternalError, AfroCometError)

    def broken(*args, **kwargs):
        raise InternalError("kd_loss: student shape (2, 3) differs from teacher shape (2, 4)")

    monkeypatch.setattr(data_cmds.presets, "callback", broken)
    with pytest.raises(InternalError, match="differs"):
        main(["presets"])
