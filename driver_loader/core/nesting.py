"""How deep a parsed document nests: bounded documents (JSON, YAML, OCI manifests) refuse more levels than any real
one has, before anything walks them recursively."""

from __future__ import annotations

from typing import Any


def deeper_than(value: Any, max_depth: int) -> bool:
    """Whether `value` nests dicts and lists more than `max_depth` levels deep; iterative, so any depth is safe."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False
