"""A config as commented YAML: every key with the one-line comment of its dataclass field.

The comments are read from the dataclass sources (`name: type = default  # comment`), so the typed
configs stay the one place where a setting is explained; `privimage init` and `privimage config show`
print them, and a test checks that every field of RunConfig has one.

Example:
    >>> print(commented_yaml(load_run_config("privimage:demo.yaml")))   # doctest: +SKIP
    privacy:
      epsilon: 10.0  # total budget of each method's release (query + DP-SGD composed)
"""

import dataclasses
import functools
import inspect
import re

import yaml

FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*#\s?(.*)$")  # `    name: type = default  # comment`


@functools.cache
def field_comments(cls) -> dict[str, str]:
    """{field name: its trailing comment} of a dataclass, read from its source."""
    comments = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            match = FIELD.match(line)
            if match:
                comments[match.group(1)] = match.group(2).strip()
    return comments


def scalar(value) -> str:
    """One YAML value on one line (flow style for lists); tuples as lists."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").strip()


def commented_lines(config, *, notes: dict[str, str] | None = None, prefix: str = "", indent: int = 0) -> list[str]:
    """YAML lines of a dataclass instance; `notes` adds text to a key's comment ({"data.resolution": ...})."""
    notes = notes or {}
    comments = field_comments(type(config))
    lines, pad = [], "  " * indent
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        value, key = getattr(config, f.name), prefix + f.name
        comment = "; ".join(c for c in (comments.get(f.name, ""), notes.get(key, "")) if c)
        tail = f"  # {comment}" if comment else ""
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:{tail}")
            lines += commented_lines(value, notes=notes, prefix=key + ".", indent=indent + 1)
        else:
            lines.append(f"{pad}{f.name}: {scalar(value)}{tail}")
    return lines


def commented_yaml(config, *, header: list[str] = (), notes: dict[str, str] | None = None) -> str:
    """The whole config as YAML text, `header` lines first as comments; loads back to the same config."""
    top = [f"# {line}".rstrip() for line in header]
    return "\n".join(top + commented_lines(config, notes=notes)) + "\n"
