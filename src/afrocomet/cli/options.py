"""Flags of `afrocomet run` / `distill` made from the config fields, and flags -> config in one place.

A config field (afrocomet.config) becomes a flag when its `metadata` has "help". Other keys, where
the flag differs from what the field's name and type give:
  flag             the flag; default: --field-name. A bool field's flag sets the opposite of its
                   default (so name it --no-... when that is true); "--a/--no-a" sets it either way
  short            a short flag as well, e.g. "-l"
  choices          the values allowed (a str field)
  min              the least value allowed (an int field)
  folder           the value is a folder (a file there is refused); stored as str
  comma_separated  a list[str] field whose flag repeats and takes comma-separated values
  all_stages       a stage field set on every stage (default: on the distillation stages only)
A list[str] field's flag repeats; list[float] takes "0.3,0.5"; list[list[int]] takes "0:5,1:11".
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from afrocomet.config import DataConfig, ModelConfig, RunConfig, StageConfig
from afrocomet.data.schema import DEFAULT_LANGUAGES
from afrocomet.errors import AfroCometError

SECTIONS = (("", RunConfig), ("data", DataConfig), ("model", ModelConfig), ("stages", StageConfig))


@dataclass(frozen=True)
class ConfigFlag:
    """One config field's flag: the click option, and the value it puts in a config."""

    section: str  # "", "data", "model" or "stages"
    name: str  # the field's name
    type: Any  # the field's type, without `| None`
    default: Any  # the field's default (dataclasses.MISSING for a default_factory)
    meta: typing.Mapping[str, Any]

    @property
    def flag(self) -> str:
        return self.meta.get("flag", "--" + self.name.replace("_", "-"))

    @property
    def param(self) -> str:
        """click's name for the value: from the (first) flag, e.g. --no-ablations -> no_ablations."""
        return self.flag.split("/")[0].lstrip("-").replace("-", "_")

    @property
    def where(self) -> str:
        if self.section != "stages":
            return ".".join(filter(None, (self.section, self.name)))
        return f"{self.name} of {'all' if self.meta.get('all_stages') else 'distill'} stages"

    def option(self):
        """The click.option decorator of this flag."""
        decls = [self.param, self.flag, *filter(None, [self.meta.get("short")])]
        text = f"{self.meta['help']}  [{self.where}]"
        if self.type is bool:  # --flag, or --flag/--no-flag (None when neither is given)
            return click.option(*decls, help=text, **({"default": None} if "/" in self.flag else {"is_flag": True}))
        if self.type == list[str]:
            return click.option(*decls, multiple=True, help=text)
        return click.option(*decls, type=self._click_type(), default=None, help=text)

    def _click_type(self) -> Any:
        if "choices" in self.meta:
            return click.Choice(list(self.meta["choices"]))
        if self.meta.get("folder"):
            return click.Path(file_okay=False, path_type=Path)
        if self.type is int and "min" in self.meta:
            return click.IntRange(min=self.meta["min"])
        return self.type if self.type in (int, float) else None  # lists are given as text, parsed in value()

    def value(self, raw: Any) -> Any:
        """The field's value for what click passed (`raw`), or None when the flag was not given."""
        if raw is None or raw == () or (raw is False and "/" not in self.flag):
            return None
        if self.type is bool:
            return raw if "/" in self.flag else not self.default
        if self.type == list[str]:
            if self.meta.get("comma_separated"):
                return split_commas(raw) or None
            return list(raw)
        if self.type == list[float]:
            return _parse_floats(self.flag, raw)
        if self.type == list[list[int]]:
            return _parse_pairs(self.flag, raw)
        return str(raw) if self.meta.get("folder") else raw

    def apply(self, config: RunConfig, raw: Any) -> None:
        """Set the field in `config` if the flag was given."""
        value = self.value(raw)
        if value is None:
            return
        if self.section != "stages":
            setattr(getattr(config, self.section) if self.section else config, self.name, value)
            return
        for stage in config.stages:
            if self.meta.get("all_stages") or stage.distills:
                setattr(stage, self.name, value)


def config_flags() -> list[ConfigFlag]:
    """The flag of every config field that has one, in the order of the config's sections and fields."""
    flags = []
    for section, cls in SECTIONS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "help" in f.metadata:
                flags.append(ConfigFlag(section, f.name, _without_none(hints[f.name]), f.default, f.metadata))
    return flags


def config_options(fn):
    """Decorate a click command with the flag of every config field."""
    for flag in reversed(config_flags()):
        fn = flag.option()(fn)
    return fn


def apply_flags(config: RunConfig, opts: dict) -> RunConfig:
    """Put the flags given in `opts` (click's values by name) into `config`; returns it."""
    for flag in config_flags():
        flag.apply(config, opts[flag.param])
    return config


def split_commas(values: tuple[str, ...] | list[str]) -> list[str]:
    """("hau,swa", "yor") -> ["hau", "swa", "yor"]"""
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def languages_or_default(values: tuple[str, ...]) -> list[str]:
    """The languages of a repeatable --languages/-l flag, else the default five."""
    return split_commas(values) or list(DEFAULT_LANGUAGES)


def _without_none(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if type(None) in typing.get_args(tp) and len(args) == 1 else tp


def _parse_pairs(flag: str, text: str) -> list[list[int]]:
    try:
        return [[int(a), int(b)] for a, b in (pair.split(":") for pair in text.split(",") if pair.strip())]
    except ValueError as exc:
        raise AfroCometError(f"{flag}: expected pairs like 0:5,1:11 (student:teacher), got {text!r}") from exc


def _parse_floats(flag: str, text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise AfroCometError(f"{flag}: expected comma-separated numbers like 0.3,0.5,1.0, got {text!r}") from exc
