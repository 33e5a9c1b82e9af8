"""The layout of a folder/archive source: which member is which split and class.

Checked from the listing alone, before anything is decoded, so that a misplaced file or a
missing split is one ``DataError`` in seconds, not after minutes of decoding.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from cifar_lab.errors import DataError

LAYOUT_HINT = "a folder or .tar/.tar.gz/.zip with train/<class>/* and test/<class>/*"
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})  # OS droppings
SPLITS = ("train", "test")


def ignored(name: str) -> bool:
    """Hidden files/folders (.DS_Store, .git) and OS droppings are not part of the dataset."""
    return name.startswith(".") or name in IGNORED_NAMES


class Layout:
    """The split/class structure of a source, with every structural problem as one DataError."""

    def __init__(self, source: Path, classes: tuple[str, ...], members: dict, labels: dict) -> None:
        self.source = source
        self.classes = classes
        self.members = members  # split -> member names, sorted by (class, path)
        self.labels = labels  # split -> label per member
        self.count = sum(len(m) for m in members.values())

    @classmethod
    def from_listing(cls, source: Path, files: list[str], dirs: list[str]) -> Layout:
        file_parts = _visible_parts(files)
        dir_parts = _visible_parts(dirs)
        if not file_parts and not dir_parts:
            raise DataError(f"data path '{source}' is empty; it must hold {LAYOUT_HINT}")
        prefix = _wrapper_prefix(file_parts, dir_parts)
        file_parts = {n: p[prefix:] for n, p in file_parts.items()}
        dir_parts = {n: p[prefix:] for n, p in dir_parts.items()}
        _check_splits(source, file_parts, dir_parts)
        per_split = {s: _class_members(source, s, file_parts, dir_parts) for s in SPLITS}
        classes = _common_classes(source, per_split)
        members, labels = {}, {}
        for split, by_class in per_split.items():  # by_class lists are in path order
            members[split] = [n for c in classes for n in by_class[c]]
            labels[split] = [label for label, c in enumerate(classes) for _ in by_class[c]]
        return cls(source, classes, members, labels)


def _visible_parts(names: list[str]) -> dict[str, tuple[str, ...]]:
    """member name -> path parts, without '.'/'' parts and without hidden/ignored entries."""
    out = {}
    for name in names:
        parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", ".", "/"))
        if parts and not any(ignored(p) for p in parts):
            out[name] = parts
    return out


def _wrapper_prefix(file_parts: dict, dir_parts: dict) -> int:
    """1 when train/ and test/ sit inside one top-level folder (e.g. 'cifar10/train/...')."""
    all_parts = list(file_parts.values()) + list(dir_parts.values())
    top_dirs = {p[0] for p in dir_parts.values()} | {p[0] for p in file_parts.values() if len(p) > 1}
    if top_dirs & set(SPLITS) or len(top_dirs) != 1:
        return 0
    inner = {p[1] for p in all_parts if len(p) > 1}
    return 1 if inner & set(SPLITS) else 0


def _check_splits(source: Path, file_parts: dict, dir_parts: dict) -> None:
    top_dirs = {p[0] for p in dir_parts.values() if p} | {p[0] for p in file_parts.values() if len(p) > 1}
    missing = [s for s in SPLITS if s not in top_dirs]
    if missing:
        found = ", ".join(f"{d}/" for d in sorted(top_dirs)) or "no folders"
        raise DataError(
            f"data path '{source}' has no {' or '.join(f'{m}/' for m in missing)} folder "
            f"(found: {found}); it must hold train/<class>/* and test/<class>/* "
            f"(optionally inside one top-level folder)"
        )


def _class_members(source: Path, split: str, file_parts: dict, dir_parts: dict) -> dict[str, list[str]]:
    """class name -> member names of one split; empty lists for empty class folders."""
    by_class: dict[str, list[str]] = {p[1]: [] for p in dir_parts.values() if len(p) > 1 and p[0] == split}
    for name, parts in sorted(file_parts.items(), key=lambda item: item[1]):
        if parts[0] != split:
            continue
        if len(parts) == 2:
            raise DataError(f"'{name}' in '{source}' is not inside a class folder; move it to {split}/<class>/")
        by_class.setdefault(parts[1], []).append(name)
    if not by_class:
        raise DataError(f"'{split}/' in '{source}' has no class folders; expected {split}/<class>/*")
    return by_class


def _common_classes(source: Path, per_split: dict[str, dict[str, list[str]]]) -> tuple[str, ...]:
    train, test = set(per_split["train"]), set(per_split["test"])
    if train != test:
        differences = (("train", train - test), ("test", test - train))
        only = [f"only in {split}/: {sorted(names)}" for split, names in differences if names]
        raise DataError(
            f"class folders differ between train/ and test/ in '{source}' ({'; '.join(only)}); "
            f"both splits need the same classes"
        )
    for split in SPLITS:
        empty = sorted(c for c, names in per_split[split].items() if not names)
        if empty:
            raise DataError(
                f"class folder '{split}/{empty[0]}' in '{source}' has no images; add images or "
                f"remove the class from both train/ and test/"
            )
    return tuple(sorted(train))
