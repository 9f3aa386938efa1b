"""Reproducible installs: the torch floor, the constraints file, and the versions a run records."""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

import pytest

from afrocomet import environment as env_mod
from afrocomet.environment import KEY_PACKAGES, TORCH_FLOOR, check_torch, describe, environment, package_versions
from afrocomet.errors import AfroCometError

ROOT = Path(__file__).resolve().parents[1]
INSTALL = 'pip install torch==2.13.0 && pip install -c constraints.txt -e ".[test]"'


def _floor(spec: str) -> tuple[int, ...]:
    match = re.search(r">=\s*(\d+)\.(\d+)", spec)
    assert match, spec
    return int(match.group(1)), int(match.group(2))


def test_the_torch_floor_of_pyproject_is_the_one_transformers_5_needs():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    torch = [d for d in project["dependencies"] if re.match(r"torch\b", d)]
    assert len(torch) == 1 and _floor(torch[0]) >= (2, 6) and _floor(torch[0]) == TORCH_FLOOR
    transformers = [d for d in project["dependencies"] if d.startswith("transformers")]
    assert transformers and _floor(transformers[0]) >= (5, 0)  # the floor is transformers 5's


@pytest.mark.parametrize("version, ok", [("2.5.1", False), ("2.5.1+cu121", False), ("2.1.0", False), ("1.13.1", False),
                                         ("2.6.0", True), ("2.6.0+cpu", True), ("2.13.0+cpu", True), ("3.0.0", True)])
def test_check_torch(version, ok):
    if ok:
        check_torch(version)
    else:
        with pytest.raises(AfroCometError, match=rf"torch {re.escape(version)} is installed, but afrocomet needs "
                                                 r"torch >= 2\.6 .*pip install torch==2\.13\.0"):
            check_torch(version)


def test_the_cli_refuses_an_old_torch_in_one_line(monkeypatch, capsys):
    from afrocomet.cli import main

    real = env_mod._installed
    monkeypatch.setattr(env_mod, "_installed", lambda name: "2.5.1" if name == "torch" else real(name))
    assert main(["presets"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1
    assert lines[0].startswith("afrocomet: error: torch 2.5.1 is installed, but afrocomet needs torch >= 2.6")
    monkeypatch.setattr(env_mod, "_installed", lambda name: None if name == "torch" else real(name))
    assert main(["presets"]) == 2 and "torch is not installed" in capsys.readouterr().err


def test_environment_records_python_platform_and_every_needed_package():
    env = environment()
    assert env["python"] == platform.python_version() and env["platform"] == platform.platform()
    assert env["cpu"] == env_mod.cpu_model() and env["cpu"]  # metrics may differ on another CPU
    packages = env["packages"]
    for name in KEY_PACKAGES:
        assert packages[name] == metadata.version(name), name
    # the requirements' requirements too (transformers -> huggingface-hub, scikit-learn -> scipy)
    assert {"huggingface-hub", "scipy", "pyyaml", "click", "tqdm"} <= set(packages)
    assert "afrocomet" not in packages and list(packages) == sorted(packages)


def test_describe_names_the_key_versions_and_says_why():
    text = describe(environment())
    assert text.startswith(f"Python {platform.python_version()} on ")
    assert f"torch {metadata.version('torch')}" in text and f"transformers {metadata.version('transformers')}" in text
    assert "identical metrics need identical versions" in text
    assert f"({environment()['cpu']})" in text
    assert describe(None) == "" and describe({}) == ""


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip() and " " not in line, f"not a pin: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_constraints_pin_every_package_afrocomet_needs():
    pins = _constraints()
    assert pins["torch"] == "2.13.0" and "afrocomet" not in pins
    needed = set(package_versions()) - {"setuptools", "pip", "wheel"}  # pip freeze leaves those out
    assert needed - set(pins) == set(), "constraints.txt is stale: regenerate it (see its header)"


def test_ci_and_readme_install_with_the_constraints():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert INSTALL + " && python -m pytest" in ci
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert INSTALL + " && python -m pytest" in readme
    assert 'pip install torch==2.13.0 && pip install -c constraints.txt -e . && afrocomet run' in readme
    assert "identical metrics need identical versions" in readme.lower()
