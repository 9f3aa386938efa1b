"""Issue 13 item 3: the thread count is chosen in one place (afrocomet.device.choose_threads) from the
free cores, every timing records the threads and the machine's load, a busy machine is said in one
warning line, and bench's teacher/student ratio has an interleaved form that a busy round cannot skew."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings

import pytest
import torch

import afrocomet.device as D
from afrocomet.errors import AfroCometError
from helpers import WORDS, tiny_classifier_dir, tiny_model, tiny_tokenizer  # noqa: F401  (fixture)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def machine(monkeypatch, cores: int, load: float | None) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(D, "busy_cores_by_others", lambda window=0.25: None)  # as where /proc is missing
    if load is None:
        def no_load():
            raise OSError("no load average here")
        monkeypatch.setattr(os, "getloadavg", no_load)
    else:
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))


@pytest.mark.parametrize("cores, load, expected", [
    (2, 0.05, 2),    # idle: every core
    (2, 1.0, 1),     # one of two cores busy: one thread, not an oversubscribed pool
    (2, 12.0, 1),    # very busy: floor of 1
    (16, 3.4, 13),   # free cores = cores - load, rounded
    (4, None, 4),    # no load average (not Linux/macOS): the available cores
])
def test_choose_threads_takes_the_free_cores(monkeypatch, cores, load, expected):
    machine(monkeypatch, cores, load)
    assert D.available_cores() == cores
    assert D.choose_threads() == expected
    assert D.choose_threads(3) == 3  # what the user asks for wins
    with pytest.raises(AfroCometError, match="threads must be at least 1"):
        D.choose_threads(0)


def test_torch_threads_sets_and_restores():
    old = torch.get_num_threads()
    with D.torch_threads(1) as used:
        assert used == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == old
    with D.torch_threads(None) as used:  # None leaves torch's count (training's default)
        assert used == old


def test_machine_load_records_and_warns_once_when_busy(monkeypatch):
    machine(monkeypatch, 2, 1.6)
    with pytest.warns(UserWarning, match="busy while timing") as said:
        load = D.machine_load(1.5, threads=1)
    assert load == {"threads": 1, "cores": 2, "busy_cores_before": 1.5, "busy_cores_after": 1.6, "busy": True}
    assert len(said) == 1 and "\n" not in str(said[0].message) and "unreliable" in str(said[0].message)
    machine(monkeypatch, 2, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an idle machine: no warning at all
        assert D.machine_load(0.2, threads=2)["busy"] is False


def test_compare_records_threads_and_load_and_the_report_shows_them(monkeypatch):
    from afrocomet.bench import compare
    from afrocomet.report.efficiency import _efficiency_section

    machine(monkeypatch, 2, 1.0)
    tokenizer = tiny_tokenizer()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(8)]
    teacher, student = tiny_model(len(tokenizer), 64, 2), tiny_model(len(tokenizer), 32, 1)
    with pytest.warns(UserWarning, match="busy while timing"):
        result = compare(teacher, student, tokenizer, tokenizer, texts, warmup=1, repeats=3, throughput_batch_size=4,
                         max_length=16)  # threads None: chosen, 1 of 2 cores is free
    assert result["threads"] == 1 and result["student"]["latency"]["threads"] == 1
    assert result["load"] == {"threads": 1, "cores": 2, "busy_cores_before": 1.0, "busy_cores_after": 1.0, "busy": True}
    text = "\n".join(_efficiency_section({"efficiency": result}))
    assert "1 threads" in text and "cores busy with other work 1.00 -> 1.00 of 2 (busy: the timings are unreliable)" in text


def test_interleaved_latency_is_robust_to_a_busy_stretch():
    """A load that hits a few calls (here: every call of round 2 is slowed) skews a one-after-the-other
    measurement but not the median of the interleaved rounds' ratios."""
    import time

    from afrocomet.bench.timing import interleaved_latency

    calls = {"n": 0}

    def slow_sometimes(base: float):
        def predict(batch):
            calls["n"] += 1
            time.sleep(base * (20 if 40 <= calls["n"] < 80 else 1))
        return predict

    result = interleaved_latency(slow_sometimes(0.004), slow_sometimes(0.001), ["a", "b", "c"], rounds=5, per_round=10,
                                 warmup=0)
    assert result["rounds"] == 5 and len(result["first_p50_ms"]) == len(result["second_p50_ms"]) == 5
    assert 2.0 < result["ratio_median"] < 8.0  # 4x, whatever the slow stretch did


def test_interleaved_latency_times_each_predictor_at_its_own_thread_count():
    """threads=(2, 1): every call of the first runs on 2 torch threads, of the second on 1 (each model at
    its faster count, as the run's efficiency block times them); the count is restored after."""
    from afrocomet.bench.timing import interleaved_latency
    from afrocomet.device import torch_threads

    seen = {"first": set(), "second": set()}

    def recording(name: str):
        return lambda batch: seen[name].add(torch.get_num_threads())

    with torch_threads(3):
        interleaved_latency(recording("first"), recording("second"), ["a", "b"], rounds=3, per_round=2, threads=(2, 1))
        assert torch.get_num_threads() == 3
    assert seen == {"first": {2}, "second": {1}}


def test_onnx_session_threads_follow_the_choice(tiny_classifier_dir, tmp_path, monkeypatch):  # noqa: F811
    from afrocomet.export import export_onnx
    from afrocomet.onnx_model import ONNX_FILE, open_session

    export_onnx(tiny_classifier_dir, tmp_path / "onnx", texts=["ina son wannan", "ban ji dadin ba"])
    machine(monkeypatch, 2, 1.2)
    options = open_session(tmp_path / "onnx" / ONNX_FILE).get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    options = open_session(tmp_path / "onnx" / ONNX_FILE, threads=2).get_session_options()
    assert options.intra_op_num_threads == 2


def _afrocomet(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "afrocomet", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)


def test_bench_json_has_threads_load_and_interleaved_ratio_and_warns_iff_busy(afrisenti_dir, tmp_path):
    proc = _afrocomet("bench", "--teacher", "tiny-teacher", "--student", "tiny-student", "--texts", "6", "-l", "hau",
                      "--data-dir", str(afrisenti_dir), "--threads", "1", "--device", "cpu", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    load = out["load"]
    assert out["threads"] == load["threads"] == 1 and load["cores"] == len(os.sched_getaffinity(0))
    assert isinstance(load["busy_cores_before"], float) and isinstance(load["busy_cores_after"], float)
    inter = out["latency_interleaved"]
    assert inter["rounds"] == len(inter["teacher_p50_ms"]) == len(inter["student_p50_ms"]) and inter["ratio_median"] > 0
    busy = [line for line in proc.stderr.splitlines() if "busy while timing" in line]
    assert len(busy) == (1 if load["busy"] else 0), proc.stderr
    assert all(line.startswith("afrocomet: warning: ") for line in busy)


def test_predict_and_evaluate_take_threads(tiny_classifier_dir, afrisenti_dir, tmp_path):  # noqa: F811
    tsv = tmp_path / "in.tsv"
    tsv.write_text("tweet\nina son wannan\nban ji dadin ba\n", encoding="utf-8")
    proc = _afrocomet("predict", "--model", str(tiny_classifier_dir), "--input", str(tsv), "--output",
                      str(tmp_path / "out.tsv"), "--threads", "1", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "out.tsv").is_file(), proc.stderr
    proc = _afrocomet("evaluate", "--model", str(tiny_classifier_dir), "-l", "hau", "--data-dir", str(afrisenti_dir),
                      "--threads", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--threads" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_run_threads_flag_and_config_field(tmp_path):
    from afrocomet.config import RunConfig, validate

    proc = _afrocomet("run", "--help", cwd=tmp_path)
    assert "--threads" in proc.stdout
    config = RunConfig()
    config.threads = 0
    with pytest.raises(AfroCometError, match="threads must be > 0"):
        validate(config)



def test_busy_cores_count_other_processes_only(monkeypatch):
    """A run's own training just before its timings must not read as 'busy' (the load average would):
    busy = (all CPUs' busy ticks - this process's ticks) / ticks per CPU over the window."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(D.time, "sleep", lambda s: None)
    samples = iter([(1000, 400, 50), (1200, 590, 240)])  # 100 ticks per CPU; 190 busy, 190 of them ours
    monkeypatch.setattr(D, "_cpu_ticks", lambda: next(samples))
    assert D.busy_cores_by_others() == 0.0
    samples = iter([(1000, 400, 50), (1200, 590, 140)])  # 190 busy, 90 ours: another process held a core
    monkeypatch.setattr(D, "_cpu_ticks", lambda: next(samples))
    assert D.busy_cores_by_others() == 1.0


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc")
def test_busy_cores_read_from_proc():
    total, busy, own = D._cpu_ticks()
    assert total >= busy >= 0 and own >= 0
    value = D.busy_cores_by_others(window=0.05)
    assert value is not None and 0.0 <= value <= (os.cpu_count() or 1) + 0.5
