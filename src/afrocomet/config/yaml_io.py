"""Reading and writing a config as YAML.

Loading is strict: an unknown key, a wrong type or an out-of-range value is an `AfroCometError`
naming the file and the line. Keys renamed since a release (RENAMED) are still read, with a warning,
so an older config.yaml (or a run saved by an older version, for --resume) keeps working.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from afrocomet.config.schema import FLOAT_TEXT, RunConfig, _line_of, validate
from afrocomet.errors import AfroCometError

RENAMED = {"log_every": "progress_every", "alpha_search_steps": "probe_steps"}  # old key -> new key


# ----------------------------------------------------------------------------- YAML in


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, line: int):
        super().__init__(key)
        self.key, self.first, self.line = key, first, line


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line, for error messages."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            if path + (key,) in out:  # YAML would keep the last silently
                raise _DuplicateKey(key, out[path + (key,)], key_node.start_mark.line + 1)
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_index(value_node, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), out)
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value: Any, tp: Any, path: tuple, fail) -> Any:
    """Check `value` against type `tp` (dataclass, list[...], X | None, int, float, str, bool)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path, fail)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail(path, f"expected a mapping for {'.'.join(map(str, path)) or 'the config'}, got {type(value).__name__}")
        return _from_dict(tp, value, path, fail)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            fail(path, f"'{_dotted(path)}' must be a list, got {type(value).__name__}")
        return [_convert(v, item_tp, path + (i,), fail) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)  # `lr: 5e-4`: YAML 1.1 (PyYAML) reads a float without a dot as text
    if tp is bool and not isinstance(value, bool):
        fail(path, f"'{_dotted(path)}' must be true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        fail(path, f"'{_dotted(path)}' must be an integer, got {value!r}")
    if tp in (float, str) and not isinstance(value, tp):
        fail(path, f"'{_dotted(path)}' must be a {_type_name(tp)}, got {value!r}")
    return value


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out


def _from_dict(cls: type, data: dict, path: tuple, fail) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key in RENAMED and RENAMED[key] in known:
            from afrocomet.quiet import warn

            if RENAMED[key] in data:
                fail(path + (key,), f"'{key}' is the old name of '{RENAMED[key]}', which is set too: keep one")
            warn(f"config key '{key}' is now '{RENAMED[key]}' (read as that; rename it to keep this quiet)")
            key = RENAMED[key]
        if key not in known:
            where = _dotted(path) or "top level"
            fail(path + (key,), f"unknown key '{key}' in {where} (known: {', '.join(known)})")
        kwargs[key] = _convert(value, hints[key], path + (key,), fail)
    return cls(**kwargs)


def from_dict(data: dict, source: str = "config", lines: dict[tuple, int] | None = None) -> RunConfig:
    """Build and validate a RunConfig from plain data (e.g. parsed YAML)."""
    lines = lines or {}

    def fail(path: tuple, message: str) -> typing.NoReturn:
        raise AfroCometError(message, path=source, line=_line_of(path, lines))

    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail((), "a config file must hold a mapping of keys to values")
    config = _from_dict(RunConfig, data, (), fail)
    return validate(config, where=source, lines=lines)


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML config file strictly (unknown keys and wrong types are errors with a line)."""
    path = Path(path)
    if not path.is_file():
        raise AfroCometError("config file not found", path=path)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise AfroCometError(f"not UTF-8 (byte {exc.start})", path=path) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise AfroCometError(f"invalid YAML: {problem}", path=path, line=line) from exc
    if data is None:  # 0 bytes, only comments, or `null`: not a config, whatever was meant
        raise AfroCometError("config file holds no settings (it is empty, only comments, or null); "
                             "start from `afrocomet config > run.yaml`", path=path)
    try:
        lines = _line_index(node) if node is not None else {}
    except _DuplicateKey as dup:
        raise AfroCometError(f"duplicate key '{dup.key}' (first on line {dup.first}); YAML would silently keep "
                             "the last one: keep one", path=path, line=dup.line) from None
    config = from_dict(data, source=str(path), lines=lines)
    if not config.stages:
        raise AfroCometError("config file lists no stages: nothing would be trained (see `afrocomet config` "
                             "for the stages of the default run)", path=path)
    return config


# ----------------------------------------------------------------------------- YAML out


def to_dict(config: RunConfig) -> dict:
    return dataclasses.asdict(config)


def to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def save_config(config: RunConfig, path: str | Path) -> Path:
    from afrocomet.io import atomic_write_text

    return atomic_write_text(path, to_yaml(config))
