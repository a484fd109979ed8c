"""The manifest's YAML, read with PyYAML's own safe loader, plus a line map from its node marks.

::

    decode(raw, file) -> text      UTF-8, or an error at the line and column of the bad byte
    read_yaml(text, file) -> (data, LineMap)
      check_characters             characters YAML refuses (NUL, other controls), at their line
      loader.get_single_node()     PyYAML composes the node tree (libyaml's CSafeLoader when
                                   PyYAML was built with it, else the pure-Python SafeLoader)
      check_tree(root)             limits, before anything walks the data (see below)
      LineMap.walk(root)           1-based line of every node, by location tuple
      loader.construct_document    the plain data, exactly as ``yaml.safe_load`` builds it

Parsing YAML is not what this project exists for, so the data and the errors are PyYAML's own;
this module only keeps the lines that error messages need, and refuses, with their line, the
documents nothing downstream could survive. PyYAML shares the node (and the object) an alias
names, but validating, expanding and fingerprinting walk the data as if every alias were
written out, so before construction the node tree is checked once, without recursion, with
the expanded size of each collection memoized by node:

- :data:`MAX_DEPTH` levels of nested collections at most, aliases expanded (pydantic, ``json``
  and ``copy`` recurse: 100 levels is far above any manifest's 6 or 7 and far below Python's
  recursion limit);
- an alias that sits inside the collection it names (a cycle) is refused;
- the document with every alias expanded has at most ``max(MAX_VALUES, ALIAS_FACTOR x the
  values written)`` values: a million values, or ten times the file's own, whichever is more,
  keeps the work after parsing proportional to the file (a "billion laughs" of ten lines is
  refused at once) while a large manifest that shares defaults by ``<<: *anchor`` in every
  shot still loads;
- an integer is at most :data:`MAX_INT_CHARS` characters long (longer ones are useless and
  Python refuses to convert a decimal of more than 4300 digits to and from text).

The cost is PyYAML's node tree (a 100k-shot manifest peaks higher than a streaming reader
would; ``benchmarks/run.py`` reports the load's peak memory).
"""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.errors import ManifestError

#: Where a value sits in the document: ``("scenes", 0, "shots", 2, "duration")``.
Loc = tuple[str | int, ...]

#: libyaml's loader when PyYAML was built with it (about 10x faster on large manifests).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Nested collections allowed, aliases expanded (the document's top mapping is level 1).
MAX_DEPTH = 100
#: Values (scalars and collections) the document may have with its aliases expanded, at least.
MAX_VALUES = 1_000_000
#: ... or this many times the values written, when that is more.
ALIAS_FACTOR = 10
#: Characters of an integer, sign and ``0x``-style prefix included.
MAX_INT_CHARS = 1000
_INT_TAG = "tag:yaml.org,2002:int"
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


def _invalid(file: str, line: int | None, message: str) -> ManifestError:
    return ManifestError.single(file, line, "", f"not valid YAML: {message}")


def decode(raw: bytes, file: str) -> str:
    """The manifest's bytes as text (UTF-8; a BOM is kept, PyYAML skips it).

    Raises:
        ManifestError: a byte that is not UTF-8, at its line and column.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[start : exc.start].decode("utf-8", "replace")) + 1
        message = (
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {column} "
            "(save the file as UTF-8)"
        )
        raise ManifestError.single(file, line, "", message) from None


def check_characters(text: str, file: str) -> None:
    """Refuse the characters YAML does not allow (NUL and other control characters).

    Raises:
        ManifestError: the first such character, at its line and column.
    """
    found = _NON_PRINTABLE.search(text)
    if found is not None:
        at = found.start()
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        message = (
            f"control character #x{ord(found.group()):04x} at column {column} "
            "(YAML allows tabs and line breaks only)"
        )
        raise _invalid(file, line, message)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _alias_line(text: str, parent: yaml.Node, child: yaml.Node) -> int | None:
    """The line of the alias ``*name`` by which ``parent`` holds ``child``; None: written there.

    A node held through an alias starts before its place in ``parent`` (an anchor comes before
    its aliases), so the alias is the ``*`` after the node's previous sibling.
    """
    floor = parent.start_mark.index
    for item in _children(parent):
        if item is child and (item.start_mark.index < floor or item is parent):
            break
        floor = max(floor, item.end_mark.index)
    else:
        return None
    at, end = floor, min(len(text), floor + 100_000)
    while at < end and text[at] != "*":
        if text[at] == "#":  # a comment, up to the end of its line
            at = text.find("\n", at, end)
            if at < 0:
                return int(parent.start_mark.line) + 1
        at += 1
    return text.count("\n", 0, at) + 1


class _Walk:
    """One walk of the node tree: expanded size and height of each collection, memoized."""

    def __init__(self, text: str, file: str) -> None:
        self.text, self.file = text, file
        #: id -> (expanded values, levels of nested collections) of each collection done.
        self.done: dict[int, tuple[int, int]] = {}
        self.written = 0

    def run(self, root: yaml.Node) -> tuple[int, int]:
        """Size and height of ``root``; refuses long integers and recursive aliases."""
        path: set[int] = set()
        # frames: [node, its children, next child index, size so far, height so far]
        stack: list[list[Any]] = []
        result = self._leaf(root)
        if result is not None:
            return result
        self._enter(root, stack, path)
        while stack:
            frame = stack[-1]
            node, children, i, size, height = frame
            while i < len(children):  # the scalars and known collections, up to a new one
                child = children[i]
                i += 1
                if child.__class__ is yaml.ScalarNode:
                    self._leaf(child)
                    size += 1
                    continue
                known = self.done.get(id(child))
                if known is None:
                    break
                size += known[0]
                height = max(height, known[1])
            else:
                stack.pop()
                path.discard(id(node))
                self.done[id(node)] = (min(size, 1 << 62), height + 1)
                if stack:
                    stack[-1][2] -= 1  # the parent looks this child up again, now known
                continue
            frame[2:] = i, size, height
            if id(child) in path:
                line = _alias_line(self.text, node, child) or node.start_mark.line + 1
                raise _invalid(
                    self.file,
                    line,
                    f"recursive alias: the alias at line {line} names a collection it is part "
                    f"of (line {child.start_mark.line + 1})",
                )
            self._enter(child, stack, path)
        return self.done[id(root)]

    def _enter(self, node: yaml.Node, stack: list[list[Any]], path: set[int]) -> None:
        self.written += 1
        path.add(id(node))
        stack.append([node, _children(node), 0, 1, 0])

    def _leaf(self, node: yaml.Node) -> tuple[int, int] | None:
        """(1, 0) for a scalar (after checking its length if an integer), None otherwise."""
        if not isinstance(node, yaml.ScalarNode):
            return None
        self.written += 1
        if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
            raise _invalid(
                self.file,
                node.start_mark.line + 1,
                f"an integer of {len(node.value)} characters (at most {MAX_INT_CHARS})",
            )
        return 1, 0

    def biggest(self, node: yaml.Node) -> tuple[yaml.Node, int]:
        """The child of ``node`` whose expansion is largest, and its size."""
        best, size = node, 0
        for child in _children(node):
            got = self.done.get(id(child), (1, 0))[0]
            if got > size:
                best, size = child, got
        return best, size

    def deepest(self, node: yaml.Node) -> yaml.Node:
        """The child of ``node`` with the most levels below it."""
        return max(_children(node), key=lambda c: self.done.get(id(c), (1, 0))[1])


def check_tree(root: yaml.Node, text: str, file: str) -> None:
    """Refuse a node tree deeper than :data:`MAX_DEPTH` or that aliases make too large.

    Iterative (no recursion) and linear in the nodes written, whatever the aliases.

    Args:
        root: the composed document.
        text: the document's text (to find the line of an alias).
        file: the manifest path, for error messages.

    Raises:
        ManifestError: a recursive alias, a too deep or too large document, a too long integer;
            each at its line.
    """
    walk = _Walk(text, file)
    size, height = walk.run(root)
    if height > MAX_DEPTH:
        node = root
        for _ in range(MAX_DEPTH):
            node = walk.deepest(node)
        raise _invalid(
            file, node.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels (aliases count)"
        )
    limit = max(MAX_VALUES, ALIAS_FACTOR * walk.written)
    if size <= limit:
        return
    node = root
    while True:  # down to the collection whose aliases repeat the most
        child, child_size = walk.biggest(node)
        if child_size <= limit:
            break
        node = child
    while True:  # then to the first alias on the way down (a collection of written ones)
        child, child_size = walk.biggest(node)
        line = _alias_line(text, node, child) if child is not node else node.start_mark.line + 1
        if line is not None:
            break
        node = child
    raise _invalid(
        file,
        line,
        f"aliases expand to more than {limit:,} values (the alias at line {line} repeats "
        f"{child_size:,} of them; the document writes {walk.written:,})",
    )


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
                    # a collection as a key is refused when constructed: never shown
                    key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
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


class _Loader(_LOADER):  # type: ignore[misc]
    """The safe loader, with a value Python cannot convert reported at its node's line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # e.g. the date 2024-13-45
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r:.60}: {exc}", node.start_mark
            ) from None


def _reader_line(text: str, exc: yaml.reader.ReaderError) -> int:
    """The line of a reader error: libyaml counts UTF-8 bytes, PyYAML characters."""
    if _LOADER is yaml.SafeLoader:
        return text.count("\n", 0, exc.position) + 1
    return text.encode("utf-8")[: exc.position].count(b"\n") + 1


def read_yaml(text: str, file: str) -> tuple[dict[str, Any], LineMap]:
    """Read the manifest's YAML into plain data (exactly PyYAML's safe loader's) and a line map.

    Args:
        text: the manifest's text.
        file: its path, for error messages.

    Returns:
        The top-level mapping and the line of every node in it.

    Raises:
        ManifestError: not valid YAML (with the line PyYAML reports), beyond the limits of
            :func:`check_tree`, or not a mapping at the top.
    """
    check_characters(text, file)
    loader = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        if root is not None:
            check_tree(root, text, file)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise _invalid(file, line, str(exc.problem)) from None
    except yaml.reader.ReaderError as exc:
        raise _invalid(file, _reader_line(text, exc), f"{exc.reason}") from None
    except yaml.YAMLError as exc:
        raise _invalid(file, None, str(exc)) from None
    except RecursionError:  # the pure-Python composer recurses (libyaml stops at 1000 levels)
        mark = loader.get_mark() if loader is not None else None
        raise _invalid(
            file, mark.line + 1 if mark else None, f"nested deeper than {MAX_DEPTH} levels"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise ManifestError.single(file, 1, "", "the manifest must be a mapping (version, name...)")
    lines = LineMap()
    lines.walk(root)
    return data, lines
