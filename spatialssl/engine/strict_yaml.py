"""YAML for recipes and overrides, read safely and strictly: PyYAML's safe loader (nothing executed), with a
duplicate key refused (PyYAML keeps the last silently), a document whose aliases expand past a sane size
refused before it is built (a "billion laughs" recipe), and nesting too deep said in one line."""
from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, SequenceNode

MAX_NODES = 100_000  # a recipe holds about a hundred values; this is far beyond any real one
MERGE = "tag:yaml.org,2002:merge"  # "<<:" keys merge a mapping in; the keys written beside them override it


class StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: the safe loader refuses it itself
                    continue
                if first != key_node.start_mark.line + 1:
                    raise ConstructorError(None, None, f"duplicate key {key!r} (first given at line {first}); keep "
                                                       "one", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """``text`` as YAML values; a yaml.YAMLError (with a problem and where) for anything refused."""
    loader = StrictLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise yaml.YAMLError("nested too deeply to be a recipe") from None
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_NODES:
            raise ConstructorError(None, None, f"its aliases expand to more than {MAX_NODES:,} values; write the "
                                               "values out (a recipe needs no aliases)", node.start_mark)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def expanded_size(root) -> int:
    """How many values the document rooted at ``root`` holds once every alias is expanded (each aliased node
    counted each time it is used), stopping early past MAX_NODES; a node that contains itself is refused."""
    sizes: dict = {}
    open_nodes: set = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = children_of(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_NODES:
                return sizes[id(node)]
            continue
        if id(node) in open_nodes:
            raise ConstructorError(None, None, "an alias refers to the value that contains it", node.start_mark)
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise ConstructorError(None, None, "an alias refers to the value that contains it", child.start_mark)
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def children_of(node) -> list:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []
