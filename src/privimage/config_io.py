"""Typed dataclass configs from YAML/JSON dicts, with `key=value` overrides and one-line errors.

Why not pydantic: the configs are plain dataclasses (nanoGPT style) so every module can own its own
config next to its code; this file only turns nested dicts into them and back, rejecting unknown keys.
"""

import dataclasses
import hashlib
import json
import types
import typing
from importlib import resources
from pathlib import Path

import yaml

from privimage.errors import UserError


def from_dict(cls, data: dict, *, where: str = "config"):
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types are UserErrors."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    kwargs = {name: _coerce(hints[name], value, where=f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {err}") from None


def _coerce(tp, value, *, where: str):
    """Convert a YAML value to the annotated type (dataclass, tuple, list, optional, scalar)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where=where) if len(inner) == 1 else value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else typing.Any
        items = [_coerce(item, v, where=f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-5 (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if tp in (int, str, bool) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise UserError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def to_dict(config) -> dict:
    """Plain nested dict of a dataclass config (tuples become lists), for config.json."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(config) -> str:
    """Short stable hash of a config: a run directory holds results of exactly one config."""
    blob = json.dumps(to_dict(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


PACKAGED = "privimage:"  # prefix of a config that ships inside the package, e.g. privimage:cifar10.yaml


def packaged_configs() -> list[str]:
    """Names of the configs installed with the package (privimage/configs/*.yaml)."""
    folder = resources.files("privimage").joinpath("configs")
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))


def config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """`privimage:NAME.yaml` -> the installed copy; any other name is a path (relative to `relative_to`)."""
    text = str(name)
    if text.startswith(PACKAGED):
        path = Path(str(resources.files("privimage").joinpath("configs", text[len(PACKAGED):])))
        if not path.is_file():
            raise UserError(f"{text}: no such packaged config (known: {', '.join(packaged_configs())})")
        return path
    return Path(name) if relative_to is None else relative_to / name


def read_yaml(path: str | Path) -> dict:
    path = config_path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); save the config as UTF-8") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the config must be a mapping of sections")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. privacy.epsilon=5")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return data
