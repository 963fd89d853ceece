"""One registration policy for every dataset mic_det registers (mic_det/data/catalog.py):
its own names are replaced on registering again, a name another module registered is
never replaced."""
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from conftest import tiny_cfg
from mic_det.data import catalog
from mic_det.data.custom import CustomDatasetError, register_custom_datasets
from mic_det.data.synthetic import register_synthetic_shift


def test_registering_again_replaces_our_own_registration():
    catalog.register("mic_det_test_set", lambda: [{"a": 1}], thing_classes=["x"])
    catalog.register("mic_det_test_set", lambda: [{"a": 2}], thing_classes=["y"])
    try:
        assert DatasetCatalog.get("mic_det_test_set") == [{"a": 2}]
        assert MetadataCatalog.get("mic_det_test_set").thing_classes == ["y"]  # no stale metadata clash
    finally:
        catalog.unregister("mic_det_test_set")
    assert "mic_det_test_set" not in DatasetCatalog.list() and "mic_det_test_set" not in MetadataCatalog.list()


def test_a_name_registered_by_another_module_is_never_replaced(tmp_path):
    DatasetCatalog.remove("synthetic_clear_val")
    DatasetCatalog.register("synthetic_clear_val", lambda: [])  # someone else's
    try:
        with pytest.raises(catalog.DatasetNameTaken, match="'synthetic_clear_val' is already registered by another module"):
            register_synthetic_shift(str(tmp_path))
        assert DatasetCatalog.get("synthetic_clear_val") == []  # still theirs
    finally:
        DatasetCatalog.remove("synthetic_clear_val")
        MetadataCatalog.remove("synthetic_clear_val")
        register_synthetic_shift(os.getenv("DETECTRON2_DATASETS", "datasets"))  # as on import


def test_a_custom_dataset_may_not_take_a_built_in_name(tmp_path):
    cfg = tiny_cfg()
    cfg.DATASETS.CUSTOM = type(cfg)({"synthetic_foggy_val": {"FORMAT": "images", "IMAGE_DIR": str(tmp_path)}})
    with pytest.raises(CustomDatasetError, match="already registered"):
        register_custom_datasets(cfg)
    assert MetadataCatalog.get("synthetic_foggy_val").thing_classes == ["car", "person", "bus"]  # untouched
