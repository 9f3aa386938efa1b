"""Safe loading: weights only through safetensors (or torch.load(weights_only=True)), nothing ever
unpickled, trust_remote_code off unless the user asks. Downloads are checked against pinned sha256
sums: tests/test_data.py::test_download_bad_checksum_writes_nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from test_catalogue import models  # noqa: F401  (a fixture)

SRC = Path(__file__).resolve().parents[1] / "src" / "afrocomet"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _calls(root: Path):
    """(file, line, call node, dotted name) of every call in the package and the benchmarks."""
    for path in sorted([*root.rglob("*.py"), *BENCHMARKS.rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                yield path, node.lineno, node, ast.unparse(node.func)


def _kw(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def test_no_pickle_modules_are_imported():
    banned = {"pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not {n.split(".")[0] for n in names} & banned, f"{path}:{node.lineno} imports {names}"


def test_every_torch_load_is_weights_only_and_np_load_never_unpickles():
    seen = 0
    for path, line, node, name in _calls(SRC):
        if name.endswith("torch.load"):
            seen += 1
            value = _kw(node, "weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{line}: torch.load without weights_only=True"
        if name in ("np.load", "numpy.load"):
            value = _kw(node, "allow_pickle")
            assert value is None or (isinstance(value, ast.Constant) and value.value is False), \
                f"{path}:{line}: np.load(allow_pickle=...) must stay False"
        assert name not in ("pickle.load", "pickle.loads", "torch.serialization.load"), f"{path}:{line}"
    assert seen >= 1  # bench.py counts .bin weights this way: the check above is not vacuous


def test_every_from_pretrained_passes_trust_remote_code_through():
    """Every load names trust_remote_code, and never as a literal True (it comes from the user's flag)."""
    seen = 0
    for path, line, node, name in _calls(SRC):
        if name.endswith(".from_pretrained"):
            seen += 1
            value = _kw(node, "trust_remote_code")
            has_kwargs = any(k.arg is None for k in node.keywords)  # **kwargs built with the flag
            assert value is not None or has_kwargs, f"{path}:{line}: {name} without trust_remote_code"
            assert not (isinstance(value, ast.Constant) and value.value is True), f"{path}:{line}: literal True"
    assert seen >= 5


@pytest.fixture
def recorded(monkeypatch):
    """Record the keyword arguments of every transformers from_pretrained call (and still load)."""
    import transformers

    calls: list[tuple[str, dict]] = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModel,
                transformers.AutoModelForMaskedLM, transformers.AutoModelForSequenceClassification):
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, _name=cls.__name__, **kwargs):
            calls.append((_name, dict(kwargs)))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    return calls


@pytest.fixture(scope="module")
def folders(models):
    """test_catalogue's saved tiny folders: `classifier` and the masked-LM `teacher`."""
    return models


def _every_loading_path(folders: Path, tmp_path: Path, flag: bool) -> None:
    """Each function through which afrocomet loads a config, tokenizer or model from a folder."""
    from afrocomet.cli import main
    from afrocomet.config import DataConfig, ModelConfig, RunConfig
    from afrocomet.distill.doctor import preflight
    from afrocomet.models.build import load_pretrained
    from afrocomet.run import has_task_head
    from afrocomet.tokenizer import tokenizer_for

    extra = ["--trust-remote-code"] if flag else []
    src = tmp_path / "in.tsv"
    src.write_text("tweet\tlabel\nina son\tpositive\n", encoding="utf-8")
    assert main(["predict", "--model", str(folders / "classifier"), "--input", str(src), "--output",
                 str(tmp_path / "p.tsv"), *extra]) == 0
    assert main(["evaluate", "--model", str(folders / "classifier"), "--test", str(src), *extra]) == 0
    model = ModelConfig(teacher=str(folders / "teacher"), student=str(folders / "teacher"), trust_remote_code=flag)
    preflight(RunConfig(model=model, data=DataConfig(max_length=64)))  # run / distill / doctor: their configs
    tokenizer_for(model, [])  # run / distill / doctor: the teacher's tokenizer
    load_pretrained(folders / "teacher", "mlm", trust_remote_code=flag)  # run: teacher and student weights
    load_pretrained(folders / "teacher", "classification", trust_remote_code=flag)
    has_task_head(str(folders / "teacher"), {0: "negative", 1: "neutral", 2: "positive"}, flag)


def test_trust_remote_code_is_off_in_every_loading_path(folders, tmp_path, recorded, one_thread):
    _every_loading_path(folders, tmp_path, flag=False)
    kinds = {name for name, _ in recorded}
    assert {"AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification", "AutoModelForMaskedLM"} <= kinds
    assert all(kwargs.get("trust_remote_code") is False for _, kwargs in recorded), recorded


def test_trust_remote_code_is_on_only_when_asked(folders, tmp_path, recorded, one_thread):
    _every_loading_path(folders, tmp_path, flag=True)
    assert recorded and all(kwargs.get("trust_remote_code") is True for _, kwargs in recorded), recorded


def test_weights_are_loaded_with_safetensors_only(folders, recorded, one_thread):
    from afrocomet.models.build import load_pretrained
    from afrocomet.predict import load_classifier

    load_classifier(folders / "classifier")
    load_pretrained(folders / "teacher", "mlm")
    models = [kw for name, kw in recorded if name.startswith("AutoModel")]
    assert len(models) == 2 and all(kw.get("use_safetensors") is True for kw in models)


def test_run_flag_sets_trust_remote_code():
    from afrocomet.cli import _resolve_config
    from test_cli import _opts

    assert _resolve_config(None, _opts()).model.trust_remote_code is False
    assert _resolve_config(None, _opts(trust_remote_code=True)).model.trust_remote_code is True


def test_doctor_flag_sets_trust_remote_code(monkeypatch):
    import afrocomet.distill.doctor as doctor
    from afrocomet.cli import main

    seen: list[bool] = []
    monkeypatch.setattr(doctor, "run_doctor", lambda config, device=None: seen.append(config.model.trust_remote_code) or [])
    assert main(["doctor", "--quick", "--json"]) == 0 and main(["doctor", "--quick", "--json", "--trust-remote-code"]) == 0
    assert seen == [False, True]
