"""The manifest's YAML, read with PyYAML's own safe loader, plus a line map from its node marks.

::

    read_yaml(text, file) -> (data, LineMap)
      loader.get_single_node()     PyYAML composes the node tree (libyaml's CSafeLoader when
                                   PyYAML was built with it, else the pure-Python SafeLoader)
      LineMap.walk(root)           1-based line of every node, by location tuple
      loader.construct_document    the plain data, exactly as ``yaml.safe_load`` builds it

Parsing YAML is not what this project exists for, so the data and the errors are PyYAML's own;
this module only keeps the lines that error messages need. The cost is PyYAML's node tree (a
100k-shot manifest peaks higher than a streaming reader would; ``benchmarks/run.py`` reports the
load's peak memory).
"""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.errors import ManifestError

#: Where a value sits in the document: ``("scenes", 0, "shots", 2, "duration")``.
Loc = tuple[str | int, ...]

#: libyaml's loader when PyYAML was built with it (about 10x faster on large manifests).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineMap:
    """1-based line of the nodes of a YAML document, by location tuple.

    Built by :meth:`walk` over PyYAML's node tree. A node reached again through an alias is
    walked once (its first location keeps the line), so an alias-heavy document costs no more
    than its nodes.

    Attributes:
        lines: location -> line of the node (for a mapping value: the line of its key).
        duplicates: (location, line) of each repeated mapping key after its first occurrence.
    """

    def __init__(self) -> None:
        self.lines: dict[Loc, int] = {}
        self.duplicates: list[tuple[Loc, int]] = []

    def walk(self, root: yaml.Node) -> None:
        """Record ``root`` and every node below it; note duplicate mapping keys."""
        seen: set[int] = set()
        stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
        while stack:
            node, loc = stack.pop()
            self.lines.setdefault(loc, node.start_mark.line + 1)
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                keys: set[str] = set()
                children: list[tuple[yaml.Node, Loc]] = []
                for key_node, value_node in node.value:
                    key = str(key_node.value)
                    child = (*loc, key)
                    if key in keys:
                        self.duplicates.append((child, key_node.start_mark.line + 1))
                    keys.add(key)
                    self.lines[child] = (
                        key_node.start_mark.line + 1
                    )  # the last key wins, as in the data
                    children.append((value_node, child))
                stack.extend(reversed(children))  # document order: an anchor before its aliases
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(reversed([(item, (*loc, i)) for i, item in enumerate(node.value)]))

    def line(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest recorded ancestor (None: not in the file)."""
        for end in range(len(loc), -1, -1):
            found = self.lines.get(loc[:end])
            if found is not None:
                return found
        return None


def read_yaml(text: str, file: str) -> tuple[dict[str, Any], LineMap]:
    """Read the manifest's YAML into plain data (exactly PyYAML's safe loader's) and a line map.

    Args:
        text: the manifest's text.
        file: its path, for error messages.

    Returns:
        The top-level mapping and the line of every node in it.

    Raises:
        ManifestError: not valid YAML (with the line PyYAML reports), or not a mapping at the top.
    """
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ManifestError.single(file, line, "", f"not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ManifestError.single(file, None, "", f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ManifestError.single(file, 1, "", "the manifest must be a mapping (version, name...)")
    lines = LineMap()
    lines.walk(root)
    return data, lines
