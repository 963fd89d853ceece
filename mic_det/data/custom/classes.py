"""DATASETS.CLASSES / CLASS_MAP / IGNORE_CLASSES: one class list for every dataset of a
run, and the mapping of each dataset's own class names onto it."""
from collections import Counter
from typing import Dict, List, Optional, Sequence

from .spec import CustomDatasetError


def norm(name) -> str:
    return str(name).strip().lower()


class ClassMapping:
    """``DATASETS.CLASSES`` / ``CLASS_MAP`` / ``IGNORE_CLASSES``: maps a dataset's class
    names (case-insensitively) to contiguous ids of the class list, or to None (ignored)."""

    def __init__(self, classes: Sequence[str], class_map: Sequence[str], ignore: Sequence[str]):
        self.renames: Dict[str, str] = {}
        for entry in class_map:
            src, sep, dst = str(entry).partition(":")
            if not sep or not src.strip() or not dst.strip():
                raise CustomDatasetError(
                    f"DATASETS.CLASS_MAP entry {entry!r} is not of the form 'from:to' "
                    f"(e.g. 'flame:fire'); the whole list is {list(class_map)}."
                )
            key = norm(src)
            if key in self.renames and norm(self.renames[key]) != norm(dst):
                raise CustomDatasetError(
                    f"DATASETS.CLASS_MAP maps {src.strip()!r} twice, to {self.renames[key]!r} and "
                    f"{dst.strip()!r}; the whole list is {list(class_map)}."
                )
            self.renames[key] = dst.strip()
        self.ignore = [str(n).strip() for n in ignore]
        self._ignore = {norm(n) for n in ignore}
        self.classes: List[str] = []
        if classes:
            self.set_classes(classes)

    def set_classes(self, classes: Sequence[str]) -> None:
        classes = [str(c).strip() for c in classes]
        seen = Counter(norm(c) for c in classes)
        dup = [c for c in classes if seen[norm(c)] > 1]
        if dup:
            raise CustomDatasetError(
                f"DATASETS.CLASSES {classes} names {sorted(set(dup))} more than once "
                "(names are compared case-insensitively)."
            )
        clash = [c for c in classes if norm(c) in self._ignore]
        if clash:
            raise CustomDatasetError(
                f"{clash} are both in DATASETS.CLASSES {classes} and in DATASETS.IGNORE_CLASSES "
                f"{self.ignore}: remove them from one of the two."
            )
        bad = sorted(
            {f"{s}:{d}" for s, d in self.renames.items() if norm(d) not in {norm(c) for c in classes} and norm(d) not in self._ignore}
        )
        if bad:
            raise CustomDatasetError(
                f"DATASETS.CLASS_MAP entries {bad} map to names that are neither in DATASETS.CLASSES "
                f"{classes} nor in DATASETS.IGNORE_CLASSES {self.ignore}."
            )
        self.classes = classes
        self._index = {norm(c): i for i, c in enumerate(classes)}

    def target_name(self, name: str) -> str:
        return self.renames.get(norm(name), str(name).strip())

    def is_ignored(self, name: str) -> bool:
        return norm(name) in self._ignore or norm(self.target_name(name)) in self._ignore

    def classes_from(self, names: Sequence[str]) -> List[str]:
        """The class list a dataset with these class names implies: renamed, ignored ones
        left out, duplicates (after renaming) merged."""
        out, seen = [], set()
        for n in names:
            if self.is_ignored(n):
                continue
            t = self.target_name(n)
            if norm(t) not in seen:
                seen.add(norm(t))
                out.append(t)
        return out

    def lookup(self, name: str) -> Optional[int]:
        """Contiguous id of a dataset class name; None if ignored; KeyError if unknown."""
        if self.is_ignored(name):
            return None
        return self._index[norm(self.target_name(name))]

    def map_names(self, names: Sequence[str], dataset: str, source: str) -> List[Optional[int]]:
        """Ids for a dataset's class list, or an error listing both sides."""
        unknown = []
        for n in names:
            try:
                self.lookup(n)
            except KeyError:
                unknown.append(n)
        if unknown:
            raise self.unknown_error(unknown, names, dataset, source)
        return [self.lookup(n) for n in names]

    def unknown_error(self, unknown, names, dataset, source) -> CustomDatasetError:
        return CustomDatasetError(
            f"DATASETS.CUSTOM.{dataset}: class name(s) {list(unknown)} match no class of DATASETS.CLASSES.\n"
            f"  dataset classes ({source}): {list(names)}\n"
            f"  expected (DATASETS.CLASSES): {self.classes}\n"
            f"  renamed (DATASETS.CLASS_MAP): {[f'{s}:{d}' for s, d in self.renames.items()]}\n"
            f"  ignored (DATASETS.IGNORE_CLASSES): {self.ignore}\n"
            "Names are matched case-insensitively. Fix it with DATASETS.CLASS_MAP (a rename, "
            f"'{unknown[0]}:<a class of DATASETS.CLASSES>'), DATASETS.IGNORE_CLASSES (drops those "
            "boxes, keeps the images) or DATASETS.CLASSES."
        )
