"""File writing that never leaves half a file, and the one list of image files we read.

Every file the project writes for later runs to read (checkpoints, results.json, the
dataset caches, rendered images, the benchmark's report) goes through
:func:`atomic_write`: a crash or a kill during the write leaves the previous file, or none,
under the final name, never a truncated one."""
import contextlib
import os
import uuid
from typing import List

# What detectron2's read_image (PIL) opens; compared in lower case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", fsync: bool = True):
    """Open a temporary file next to ``path`` for writing (``mode`` "w" or "wb"); when the
    block ends without an exception, flush it (to disk, unless ``fsync`` is False: bulk
    writers of many small files that can be rewritten) and rename it to ``path``. On an
    exception the temporary file is removed and ``path`` is left as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    # unique per process and call: two writers of one path never share a temporary file
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str, recursive: bool = True) -> List[str]:
    """Paths of the image files in ``folder`` (and below it when ``recursive``), in a fixed
    order: each folder's files sorted by name, then its subfolders, sorted, in turn."""
    if not recursive:
        return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                      if is_image_file(n) and os.path.isfile(os.path.join(folder, n)))
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out.extend(os.path.join(dirpath, n) for n in sorted(filenames) if is_image_file(n))
    return out
