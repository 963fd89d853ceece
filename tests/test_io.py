"""mic_det.utils.io: the one atomic writer and image listing every module uses."""
import os

import pytest

from mic_det.utils.io import atomic_write, is_image_file, list_images


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"  # the folder is made
    with atomic_write(str(path)) as f:
        f.write("first")
    with atomic_write(str(path), "wb") as f:
        f.write(b"second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["results.json"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "model_final.pth"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["model_final.pth"]


def test_atomic_write_refuses_modes_that_would_not_replace(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(str(tmp_path / "x"), "a"):
            pass


def test_list_images_by_extension_in_any_case_sorted_and_recursive(tmp_path):
    for rel in ("b.PNG", "a.jpg", "notes.txt", "z/c.jpeg", "y/d.ppm", "x.jpg/e.bmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = [os.path.relpath(p, tmp_path) for p in list_images(str(tmp_path))]
    assert found == ["a.jpg", "b.PNG", "x.jpg/e.bmp", "y/d.ppm", "z/c.jpeg"]
    # one level: a folder whose name looks like an image is not an image
    assert [os.path.basename(p) for p in list_images(str(tmp_path), recursive=False)] == ["a.jpg", "b.PNG"]
    assert is_image_file("frame.TIFF") and not is_image_file("labels.xml")
