"""The software a run used, and the oldest torch afrocomet runs on.

Metrics depend on the versions installed (the same code and seed gave a different default-run score
once the install resolved newer packages), so every run records
Python, the platform, the CPU and the version of every package afrocomet needs, its requirements' own
requirements and the installed extras included (results.json `environment`; one line of report.md).
`constraints.txt` in the repository pins them: `pip install -c constraints.txt -e ".[test]"`.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Mapping

from afrocomet.errors import AfroCometError

# transformers 5 turns PyTorch off below 2.6 ("Disabling PyTorch because PyTorch >= 2.6 is required"),
# after which no model can be built: the floor of pyproject.toml's torch range (the tests keep them equal)
TORCH_FLOOR = (2, 6)
# shown in report.md; results.json holds them all
KEY_PACKAGES = ("torch", "transformers", "tokenizers", "scikit-learn", "numpy", "safetensors", "accelerate")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def environment() -> dict:
    """{python, implementation, platform, cpu, packages: {name: version}} of this process."""
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "cpu": cpu_model(), "packages": package_versions()}


def cpu_model() -> str:
    """The CPU's model name ("" where unknown): the same code, versions and seed gave other floats on
    another machine (the default run's transformer teacher, 57.23 against 57.70; benchmarks/README.md),
    as torch's CPU kernels may sum in another order there."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _requirements(name: str, extras: bool) -> list[str]:
    """Names `name` requires (its markers evaluated here; `extras`: every extra's requirements too)."""
    try:
        lines = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []
    names = []
    for line in lines:
        requirement, _, marker = line.partition(";")
        match = _NAME.match(requirement)
        if match and (extras or _applies(marker)):
            names.append(match.group(1))
    return names


def _applies(marker: str) -> bool:
    """A requirement's environment marker holds here (an `extra == ...` one does not)."""
    if not marker.strip():
        return True
    if "extra" in marker:
        return False
    try:
        from packaging.markers import Marker

        return Marker(marker).evaluate()
    except Exception:  # packaging missing or a marker it cannot read: record the package if installed
        return True


def package_versions() -> dict[str, str]:
    """{canonical name: version} of afrocomet's requirements (its installed extras' too), their
    requirements, and so on, as installed; KEY_PACKAGES always (also without afrocomet's metadata)."""
    seen: dict[str, str] = {}
    todo = _requirements("afrocomet", extras=True) + list(KEY_PACKAGES)
    while todo:
        name = todo.pop()
        key = _canonical(name)
        if key in seen or key == "afrocomet":
            continue
        version = _installed(name)
        if version is None:
            continue
        seen[key] = version
        todo.extend(_requirements(name, extras=False))
    return dict(sorted(seen.items()))


def describe(env: Mapping | None) -> str:
    """report.md's line: Python, the platform, KEY_PACKAGES' versions, and where the rest is."""
    if not isinstance(env, Mapping):
        return ""
    packages = env.get("packages") or {}
    key = [f"{name} {packages[name]}" for name in KEY_PACKAGES if name in packages]
    more = len(packages) - len(key)
    head = " ".join(x for x in (f"Python {env['python']}" if env.get("python") else "",
                                f"on {env['platform']}" if env.get("platform") else "",
                                f"({env['cpu']})" if env.get("cpu") else "") if x)
    tail = f" and {more} more in results.json `environment`" if more > 0 else ""
    return "; ".join(x for x in (head, ", ".join(key) + tail if key else "") if x) + \
        (" (identical metrics need identical versions: constraints.txt)" if key else "")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:2])


def check_torch(version: str | None = None) -> None:
    """An AfroCometError naming the fix when torch is missing or older than TORCH_FLOOR
    (`version`: the installed one unless given)."""
    version = _installed("torch") if version is None else version
    floor = ".".join(map(str, TORCH_FLOOR))
    if version is None:
        raise AfroCometError(f"torch is not installed: install it first, e.g. pip install torch==2.13.0 "
                             f"(afrocomet needs torch >= {floor})")
    if _version_tuple(version) < TORCH_FLOOR:
        raise AfroCometError(f"torch {version} is installed, but afrocomet needs torch >= {floor} (transformers 5 "
                             f"turns PyTorch off below {floor}): pip install torch==2.13.0, or any torch >= {floor}")
