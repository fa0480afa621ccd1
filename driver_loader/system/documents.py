"""Parsing documents the loader does not control (JSON from repositories and the cache, YAML from operators) with
bounds. JSON: nested at most MAX_DEPTH levels. YAML: no aliases (a few hundred bytes of aliases expand to billions
of nodes), nested at most MAX_DEPTH levels, at most MAX_YAML_NODES values. A JSON document that breaks a bound
raises DocumentLimitError, a ValueError, so callers that treat malformed input as such need nothing more; a YAML
one raises yaml.YAMLError like any other malformed YAML.
"""

from __future__ import annotations

import json
from typing import Any

from driver_loader.core.nesting import deeper_than

MAX_DEPTH = 32
MAX_YAML_NODES = 10_000


class DocumentLimitError(ValueError):
    """The document breaks one of the bounds (depth, aliases, number of entries)."""


def load_json(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, refusing documents nested deeper than `max_depth` arrays and objects."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise DocumentLimitError(f"it is nested more than {max_depth} levels deep") from None
    if deeper_than(value, max_depth):
        raise DocumentLimitError(f"it is nested more than {max_depth} levels deep")
    return value


def load_yaml(text: str, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_YAML_NODES) -> Any:
    """`yaml.safe_load`, refusing aliases, more than `max_depth` nested collections and more than `max_nodes`
    nodes. Raises yaml.YAMLError when the text is malformed or breaks a bound (`problem` says which,
    `problem_mark` where). The events are checked first, lazily, so a hostile document costs at most
    `max_nodes` events before it is refused; only then is it loaded."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it
    depth = nodes = 0
    for event in yaml.parse(text, Loader=loader):
        problem = None
        if isinstance(event, yaml.AliasEvent):
            problem = "YAML aliases (*name) are not allowed"
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > max_depth:
                problem = f"nested more than {max_depth} levels deep"
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > max_nodes:
                problem = f"more than {max_nodes} values"
        if problem is not None:
            raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, and the events were checked above
