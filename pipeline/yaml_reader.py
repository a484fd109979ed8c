"""The manifest's YAML reader: PyYAML's plain data and a line map, without a node tree.

::

    read_yaml(text, file)      -> (data, LineMap)
      _read_fast(text)         one pass over libyaml's events (CParser) straight into the plain
                               data SafeLoader builds; keeps only a compact start-line array
                               per list of mappings (the shot entries), in the LineMap
      _compose_and_construct   fallback: PyYAML's own loader (node tree, then data, then lines)
    LineMap.line(loc)          any other line, looked up lazily: one more pass over a compact
                               outline of the document (_outline, _walk_outline), and only when
                               a problem must be reported

Why: memory. PyYAML's loader builds a node tree (objects per key, value and mark) before the
data: composing and constructing a 100k-shot manifest alone peaks at about 330 MB RSS. Reading
events straight into the data, with one line per shot entry kept in an ``array``, means no node
tree ever exists: the whole ``load_manifest`` of 100k shots (validation and expansion included)
peaks at about 144 MB RSS, some 87 MB of which is the interpreter and imports.

Rarer YAML (tags other than the standard scalars, complex or anchored keys, recursive aliases)
and invalid YAML are left to PyYAML's loader, so data, errors and lines are always exactly
PyYAML's: the fast path is an optimisation, never a dialect.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import Any

import yaml

from pipeline.errors import ManifestError

#: Where a value sits in the document: ``("scenes", 0, "shots", 2, "duration")``.
Loc = tuple[str | int, ...]


class LineMap:
    """1-based line of the nodes of a YAML document, by location tuple.

    Complete when built by :meth:`walk` over PyYAML's node tree. After the fast reader it holds
    only the start line of each item of a list of mappings (by list, see :meth:`item_lines`);
    any other location is found again from ``text`` when asked, for a whole batch in one pass
    (:meth:`resolve`) over a compact outline of the tree, walked the same way: same answers.

    Args:
        text: the YAML text (needed only when ``items`` is given).
        items: start lines of the items of lists, by ``id`` of the list in the read data.
    """

    def __init__(self, text: str = "", items: dict[int, array[int]] | None = None) -> None:
        self.lines: dict[Loc, int] = {}
        self.duplicates: list[tuple[Loc, int]] = []
        self.text = text
        self._items = items
        self._full = items is None
        self._known: set[Loc] = set()

    def item_lines(self, seq: list[Any]) -> array[int] | None:
        """Start lines of the items of ``seq`` (a list of the read data), when they were kept."""
        return None if self._items is None else self._items.get(id(seq))

    def forget_items(self) -> None:
        """Drop the item lines (they are keyed by list identity: call before the data is freed)."""
        if self._items is not None:
            self._items = {}

    def resolve(self, locs: Iterable[Loc]) -> None:
        """Find the lines of ``locs`` (and of their ancestors) in one pass over the text."""
        if self._full:
            return
        wanted = {loc[:end] for loc in locs for end in range(len(loc) + 1)} - self._known
        if wanted:
            _walk_outline(_outline(self.text), (), wanted, self.lines, [])
            self._known |= wanted

    def walk(self, node: yaml.Node, loc: Loc = ()) -> None:
        """Record ``node`` and its children; note duplicate mapping keys."""
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*loc, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self.walk(value_node, child)
                self.lines[child] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, (*loc, i))

    def line(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest recorded ancestor."""
        if not self._full and loc not in self._known:
            self.resolve([loc])
        for end in range(len(loc), -1, -1):
            found = self.lines.get(loc[:end])
            if found is not None:
                return found
        return None


#: libyaml's loader when PyYAML was built with it (about 10x faster on large manifests).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_T = "tag:yaml.org,2002:"
_MAP_TAG, _SEQ_TAG, _STR_TAG, _MERGE_TAG, _VALUE_TAG = (
    _T + t for t in ("map", "seq", "str", "merge", "value")
)
#: Scalar tags PyYAML's SafeConstructor builds (besides ``str``: the text itself).
_SCALAR_TAGS = frozenset(_T + t for t in ("null", "bool", "int", "float", "binary", "timestamp"))
_KEY: Any = object()  # a mapping being read waits for a key
_MERGE: Any = object()  # ... for the value of a merge key (``<<``)
#: An anchor's value, start line, raw keys (a mapping), raw keys of its items (a merge list).
_Anchor = tuple[Any, int, list[str] | None, list[list[str]] | None]


class _Fallback(Exception):
    """The fast reader leaves this document to PyYAML's loader (rare YAML, or not valid)."""


def _compose_and_construct(text: str) -> tuple[Any, Any]:
    """PyYAML's own reading: the node tree (for line numbers) and the Python data built from it.

    Raises:
        yaml.YAMLError: not valid YAML.
    """
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def _tag(loader: Any, event: Any, kind: type[yaml.Node]) -> str:
    """The tag of a node event, resolved as PyYAML's composer does."""
    tag: str | None = event.tag
    if tag is None or tag == "!":
        value = event.value if kind is yaml.ScalarNode else None
        tag = loader.resolve(kind, value, event.implicit)
    assert tag is not None
    return tag


class _Map:
    """A mapping being read: its own pairs, merged pairs and raw key texts (duplicate check)."""

    __slots__ = ("anchor", "key", "keys", "line", "merged", "merged_keys", "raw", "value")

    def __init__(self, line: int, anchor: str | None) -> None:
        self.line, self.anchor = line, anchor
        self.value: dict[Any, Any] = {}
        self.keys: list[str] = []
        self.key: Any = _KEY
        self.raw = ""
        self.merged: dict[Any, Any] | None = None
        self.merged_keys: list[str] = []

    def merge(self, value: dict[Any, Any], keys: list[str]) -> None:
        if self.merged is None:
            self.merged = {}
        self.merged.update(value)
        self.merged_keys.extend(keys)

    def finish(self) -> tuple[dict[Any, Any], list[str]]:
        # PyYAML's flatten_mapping: merged pairs first, then the mapping's own (which win).
        if self.merged is None:
            return self.value, self.keys
        self.merged.update(self.value)
        return self.merged, self.merged_keys + self.keys


class _Seq:
    """A list being read, with the start line of each item."""

    __slots__ = ("anchor", "item_keys", "line", "lines", "maps", "merge", "value")

    def __init__(self, line: int, anchor: str | None, merge: bool) -> None:
        self.line, self.anchor, self.merge = line, anchor, merge
        self.value: list[Any] = []
        self.lines = array("I")
        self.maps = False
        self.item_keys: list[list[str]] = []

    def add(self, value: Any, line: int, keys: list[str] | None) -> None:
        self.value.append(value)
        self.lines.append(line)
        if keys is not None:
            self.maps = True
        if self.merge:
            if keys is None:
                raise _Fallback  # PyYAML: expected a mapping for merging
            self.item_keys.append(keys)


class _Reader:
    """The data PyYAML's SafeLoader builds, read from libyaml's events without a node tree.

    Raises _Fallback at anything it leaves to PyYAML (see the module docstring); notes whether
    the document has duplicate keys (as :meth:`LineMap.walk` counts them).
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.stack: list[_Map | _Seq] = []
        self.anchors: dict[str, _Anchor | None] = {}  # None: still being read
        self.items: dict[int, array[int]] = {}
        self.strings: dict[str, str] = {}  # one object per distinct key text
        self.duplicates = False
        self.root: Any = None
        self.done = False

    def read(self) -> None:
        get = self.loader.get_event
        get()  # stream start
        if isinstance(get(), yaml.StreamEndEvent):
            return
        handlers = {
            yaml.ScalarEvent: self._scalar,
            yaml.MappingStartEvent: self._map_start,
            yaml.MappingEndEvent: self._map_end,
            yaml.SequenceStartEvent: self._seq_start,
            yaml.SequenceEndEvent: self._seq_end,
            yaml.AliasEvent: self._alias,
        }
        while not self.done:
            event = get()
            handler = handlers.get(type(event))
            if handler is None:
                raise _Fallback
            handler(event)
        get()  # document end
        if not isinstance(get(), yaml.StreamEndEvent):
            raise _Fallback  # another document: PyYAML says which

    def _construct(self, tag: str, event: Any) -> Any:
        if tag not in _SCALAR_TAGS:
            raise _Fallback  # merge or value keys out of place, sets, custom tags...
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return self.loader.yaml_constructors[tag](self.loader, node)
        except Exception as exc:
            raise _Fallback from exc

    def _top(self) -> _Map | _Seq | None:
        return self.stack[-1] if self.stack else None

    def _scalar(self, event: Any) -> None:
        tag = _tag(self.loader, event, yaml.ScalarNode)
        top = self._top()
        if isinstance(top, _Map) and top.key is _KEY:
            self._key(top, tag, event)
            return
        value = event.value if tag == _STR_TAG else self._construct(tag, event)
        line = event.start_mark.line + 1
        if event.anchor is not None:
            self._reserve(event.anchor)
            self.anchors[event.anchor] = (value, line, None, None)
        self._put(value, line, None)

    def _key(self, top: _Map, tag: str, event: Any) -> None:
        if event.anchor is not None:
            raise _Fallback
        if tag == _MERGE_TAG:
            top.key = _MERGE
            return
        raw = self.strings.setdefault(event.value, event.value)
        top.key = raw if tag in (_STR_TAG, _VALUE_TAG) else self._construct(tag, event)
        top.raw = raw

    def _open(self, event: Any, kind: type[yaml.Node], tag: str) -> tuple[int, str | None, bool]:
        if _tag(self.loader, event, kind) != tag:
            raise _Fallback  # !!set, !!omap, custom tags...
        top = self._top()
        if isinstance(top, _Map) and top.key is _KEY:
            raise _Fallback  # a mapping or a list as a key
        if event.anchor is not None:
            self._reserve(event.anchor)
        merge = isinstance(top, _Map) and top.key is _MERGE
        return event.start_mark.line + 1, event.anchor, merge

    def _map_start(self, event: Any) -> None:
        line, anchor, _ = self._open(event, yaml.MappingNode, _MAP_TAG)
        self.stack.append(_Map(line, anchor))

    def _seq_start(self, event: Any) -> None:
        self.stack.append(_Seq(*self._open(event, yaml.SequenceNode, _SEQ_TAG)))

    def _map_end(self, event: Any) -> None:
        frame = self.stack.pop()
        assert isinstance(frame, _Map)
        value, keys = frame.finish()
        if len(set(keys)) != len(keys):
            self.duplicates = True
        if frame.anchor is not None:
            self.anchors[frame.anchor] = (value, frame.line, keys, None)
        self._put(value, frame.line, keys)

    def _seq_end(self, event: Any) -> None:
        frame = self.stack.pop()
        assert isinstance(frame, _Seq)
        if frame.anchor is not None:
            merged = frame.item_keys if frame.merge else None
            self.anchors[frame.anchor] = (frame.value, frame.line, None, merged)
        top = self._top()
        if frame.merge and isinstance(top, _Map):
            self._merge_list(top, frame.value, frame.item_keys)
            return
        if frame.maps:
            self.items[id(frame.value)] = frame.lines
        self._put(frame.value, frame.line, None)

    def _alias(self, event: Any) -> None:
        found = self.anchors.get(event.anchor)
        top = self._top()
        if found is None or (isinstance(top, _Map) and top.key is _KEY):
            raise _Fallback  # undefined, recursive, or a key
        value, line, keys, item_keys = found
        if isinstance(top, _Map) and top.key is _MERGE and keys is None:
            if item_keys is None:
                raise _Fallback  # PyYAML: expected a mapping or list of mappings for merging
            self._merge_list(top, value, item_keys)
            return
        self._put(value, line, keys)

    def _merge_list(self, top: _Map, values: list[Any], keys: list[list[str]]) -> None:
        # PyYAML merges a list of mappings last first: the first one listed wins.
        for value, item_keys in zip(reversed(values), reversed(keys), strict=True):
            top.merge(value, item_keys)
        top.key = _KEY

    def _reserve(self, anchor: str) -> None:
        if anchor in self.anchors:
            raise _Fallback  # PyYAML: found duplicate anchor
        self.anchors[anchor] = None

    def _put(self, value: Any, line: int, keys: list[str] | None) -> None:
        top = self._top()
        if top is None:
            self.root, self.done = value, True
        elif isinstance(top, _Seq):
            top.add(value, line, keys)
        else:
            if top.key is _MERGE:
                if keys is None:
                    raise _Fallback  # PyYAML: expected a mapping or list of mappings for merging
                top.merge(value, keys)
            else:
                top.value[top.key] = value
                top.keys.append(top.raw)
            top.key = _KEY


#: PyYAML's node tree reduced to what :meth:`LineMap.walk` reads: a scalar is its line, a mapping
#: ``("m", line, [raw key, key line, value, raw key, ...])`` (merge keys flattened as
#: SafeConstructor does), a list ``("s", line, [item, ...])``; an alias is the anchored outline.
_Outline = Any


def _outline(text: str) -> _Outline:
    """The outline of a document the fast reader read, from one pass over its events."""
    loader = _LOADER(text)
    try:
        get = loader.get_event
        get(), get()  # stream start, document start
        anchors: dict[str, _Outline] = {}
        shared: dict[Any, Any] = {}  # one object per distinct key text and line number
        # Open collections: [kind, line, entries, pending key, anchor, merged entries]
        stack: list[list[Any]] = []
        while True:
            event = get()
            kind = type(event)
            if kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                is_map = kind is yaml.MappingStartEvent
                line = event.start_mark.line + 1
                stack.append(["m" if is_map else "s", line, [], _KEY, event.anchor, []])
                continue
            top = stack[-1] if stack else None
            if kind is yaml.ScalarEvent and top is not None and top[0] == "m" and top[3] is _KEY:
                if _tag(loader, event, yaml.ScalarNode) == _MERGE_TAG:
                    top[3] = _MERGE
                else:
                    line = event.start_mark.line + 1
                    top[3] = shared.setdefault(event.value, event.value)
                    top[2] += (top[3], shared.setdefault(line, line))
                continue
            node, anchor = _outline_node(event, kind, stack, anchors, shared)
            if anchor is not None:
                anchors[anchor] = node
            if not stack:
                return node
            _outline_put(stack[-1], node)
    finally:
        loader.dispose()


def _outline_node(
    event: Any,
    kind: type,
    stack: list[list[Any]],
    anchors: dict[str, _Outline],
    shared: dict[Any, Any],
) -> tuple[_Outline, str | None]:
    if kind is yaml.ScalarEvent:
        line = event.start_mark.line + 1
        return shared.setdefault(line, line), event.anchor
    if kind is yaml.AliasEvent:
        return anchors[event.anchor], None
    if kind is not yaml.MappingEndEvent and kind is not yaml.SequenceEndEvent:
        raise _Fallback
    kind_, line, entries, _, anchor, merged = stack.pop()
    return (kind_, line, merged + entries if merged else entries), anchor


def _outline_put(top: list[Any], node: _Outline) -> None:
    if top[0] == "s":
        top[2].append(node)
    elif top[3] is _MERGE:  # a mapping, or a list of them (the first listed wins)
        if isinstance(node, int):
            raise _Fallback
        for source in [node] if node[0] == "m" else reversed(node[2]):
            top[5].extend(source[2])
        top[3] = _KEY
    else:  # the key and its line are in already
        top[2].append(node)
        top[3] = _KEY


def _walk_outline(
    node: _Outline,
    loc: Loc,
    wanted: set[Loc],
    found: dict[Loc, int],
    duplicates: list[tuple[Loc, int]],
) -> None:
    """:meth:`LineMap.walk` on an outline, recording only the ``wanted`` locations."""
    line = node if isinstance(node, int) else node[1]
    if loc in wanted:
        found.setdefault(loc, line)
    if isinstance(node, int):
        return
    if node[0] == "s":
        for i, item in enumerate(node[2]):
            _walk_outline(item, (*loc, i), wanted, found, duplicates)
        return
    seen: set[str] = set()
    entries = node[2]
    for at in range(0, len(entries), 3):
        key, key_line, value = entries[at : at + 3]
        child = (*loc, key)
        if key in seen:
            duplicates.append((child, key_line))
        seen.add(key)
        if child in wanted:
            found[child] = key_line
        _walk_outline(value, child, wanted, found, duplicates)


def _read_fast(text: str) -> _Reader | None:
    """The fast reader's result, or None when PyYAML must read the document itself."""
    loader = _LOADER(text)
    reader = _Reader(loader)
    try:
        reader.read()
    except (_Fallback, yaml.YAMLError):
        return None
    finally:
        loader.dispose()
    return reader


def read_yaml(text: str, file: str) -> tuple[dict[str, Any], LineMap]:
    """Read the manifest's YAML into plain data (exactly PyYAML's SafeLoader's) and a line map.

    Raises:
        ManifestError: not valid YAML, or not a mapping at the top.
    """
    reader = _read_fast(text)
    root: Any = None
    if reader is not None:
        data = reader.root
    else:
        try:
            root, data = _compose_and_construct(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            raise ManifestError.single(file, line, "", f"not valid YAML: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise ManifestError.single(file, None, "", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError.single(file, 1, "", "the manifest must be a mapping (version, name...)")
    if reader is not None:
        lines = LineMap(text, reader.items)
        if reader.duplicates:
            _walk_outline(_outline(text), (), set(), {}, lines.duplicates)
        return data, lines
    lines = LineMap(text)
    lines.walk(root)
    return data, lines
