"""One DATASETS.CUSTOM.<name> node: its format and keys checked, its paths resolved, and
the errors every reader raises (they name the dataset, the key and the file)."""
import os
from typing import Optional

# The keys each format takes (the readers' docstrings say what they mean).
KEYS = {
    "coco": ("FORMAT", "ROOT", "JSON_FILE", "IMAGE_ROOT"),
    "voc": ("FORMAT", "ROOT", "ANN_DIR", "IMAGE_DIR", "SPLIT", "IMAGESET", "NAMES", "ONE_BASED"),
    "yolo": ("FORMAT", "ROOT", "SPLIT", "IMAGE_DIR", "LABEL_DIR", "DATA_YAML", "NAMES"),
    "images": ("FORMAT", "ROOT", "IMAGE_DIR"),
}
FORMATS = tuple(KEYS)


class CustomDatasetError(ValueError):
    """A custom dataset's config, class names or files are wrong. The message names the
    dataset, the config key to fix and, where a file is at fault, the file."""


class CustomDatasetFileError(CustomDatasetError, FileNotFoundError):
    """A folder or file a custom dataset needs does not exist."""


class DatasetSpec:
    """One DATASETS.CUSTOM.<name> node, checked."""

    def __init__(self, name: str, node):
        self.name = name
        if not hasattr(node, "items"):
            raise CustomDatasetError(
                f"DATASETS.CUSTOM.{name} must be a mapping of keys (FORMAT, ROOT, ...), got {node!r}."
            )
        if "." in name:
            raise CustomDatasetError(f"DATASETS.CUSTOM.{name}: a dataset name cannot contain '.'.")
        self.node = {str(k): v for k, v in node.items()}
        fmt = str(self.node.get("FORMAT", "")).strip().lower()
        if fmt not in KEYS:
            raise CustomDatasetError(
                f"DATASETS.CUSTOM.{name}.FORMAT must be one of {list(KEYS)}, got {self.node.get('FORMAT')!r}."
            )
        self.format = fmt
        unknown = sorted(set(self.node) - set(KEYS[fmt]))
        if unknown:
            raise CustomDatasetError(
                f"DATASETS.CUSTOM.{name}: unknown key(s) {unknown} for FORMAT {fmt!r}; "
                f"the keys of this format are {list(KEYS[fmt])}."
            )
        if "ONE_BASED" in self.node and not isinstance(self.node["ONE_BASED"], bool):
            raise CustomDatasetError(f"{self.key('ONE_BASED')} must be True or False, got {self.node['ONE_BASED']!r}.")
        if self.has("NAMES") and not isinstance(self.node["NAMES"], (list, tuple)):
            raise CustomDatasetError(f"{self.key('NAMES')} must be a list of class names, got {self.node['NAMES']!r}.")
        self.root = self.path("ROOT", must="dir") if self.node.get("ROOT") else None

    def key(self, key: str) -> str:
        return f"DATASETS.CUSTOM.{self.name}.{key}"

    def has(self, key: str) -> bool:
        v = self.node.get(key)
        return v is not None and v != "" and v != [] and v != ()

    def resolve(self, value: str, relative_to_root: bool = True) -> str:
        value = os.path.expanduser(str(value))
        if not os.path.isabs(value) and relative_to_root and self.root is not None:
            value = os.path.join(self.root, value)
        return os.path.abspath(value)

    def path(self, key: str, must: Optional[str] = None, default: Optional[str] = None) -> str:
        """The absolute path of a key (or of ``default`` when unset); checked when
        ``must`` is "dir" or "file"."""
        raw = self.node.get(key) if self.has(key) else default
        if raw is None:
            raise CustomDatasetError(f"{self.key(key)} is required for FORMAT {self.format!r}.")
        path = self.resolve(raw, relative_to_root=(key != "ROOT"))
        check = {"dir": os.path.isdir, "file": os.path.isfile}.get(must)
        if check is not None and not check(path):
            how = "" if os.path.isabs(os.path.expanduser(str(raw))) else (
                f" (resolved from {raw!r} against "
                + ("the working directory " + os.getcwd() if key == "ROOT" or self.root is None else f"ROOT {self.root}")
                + ")"
            )
            what = "folder" if must == "dir" else "file"
            if not self.has(key):
                key = f"{key} (unset, default {default!r})"
            raise CustomDatasetFileError(f"{self.key(key)}: {what} {path!r} does not exist{how}.")
        return path
