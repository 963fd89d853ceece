"""Each custom-dataset reader on its own (mic_det/data/custom/{coco,voc,yolo,images}.py):
records with the dataset's own class names, boxes in pixels, before any class mapping;
then the one mapping pass (register.map_classes). The end-to-end behaviour through the
config is in test_custom_data.py."""
import pytest
from detectron2.structures import BoxMode

from mic_det.data.custom import coco, images, voc, yolo
from mic_det.data.custom.classes import ClassMapping
from mic_det.data.custom.register import map_classes
from mic_det.data.custom.spec import CustomDatasetError, DatasetSpec
from test_custom_data import make_coco, make_voc_layout, make_yolo, write_image


def named_boxes(d):
    return [(a["category_name"], [round(v, 6) for v in a["bbox"]]) for a in d["annotations"]]


def test_coco_reader_keeps_category_names_and_converts_xywh(tmp_path):
    root = make_coco(tmp_path / "c")
    spec = DatasetSpec("c", {"FORMAT": "coco", "ROOT": str(root), "JSON_FILE": "ann.json", "IMAGE_ROOT": "imgs"})
    names, source, data = coco.class_names(spec)
    assert names == ["Fire", "default", "Smoke"] and "ann.json" in source and data["images"]
    x, y = coco.read(spec)
    assert named_boxes(x) == [("Fire", [1.5, 2.0, 11.5, 22.0]), ("Smoke", [30.0, 4.0, 38.0, 10.0])]
    assert [a["iscrowd"] for a in x["annotations"]] == [0, 1]
    assert all(a["bbox_mode"] == BoxMode.XYXY_ABS for a in x["annotations"])
    assert (y["height"], y["width"], x["image_id"]) == (40, 50, 7)  # size from the header, the json's id


def test_voc_reader_names_from_the_xml_and_one_based_pixels(tmp_path):
    root = make_voc_layout(tmp_path / "v")
    spec = DatasetSpec("v", {"FORMAT": "voc", "ROOT": str(root), "SPLIT": "train"})
    names, _, _ = voc.class_names(spec)
    assert names == ["default", "FIRE", "smoke"]  # every xml name, sorted case-insensitively
    first, second = voc.read(spec)  # 0001, 0002 of ImageSets/Main/train.txt
    assert named_boxes(first) == [("FIRE", [10.0, 5.0, 30.0, 20.0]), ("smoke", [0.0, 0.0, 64.0, 32.0])]
    assert first["annotations"][0]["annotation_file"].endswith("0001.xml")
    assert named_boxes(second) == [("default", [0.0, 0.0, 64.0, 32.0])]


def test_yolo_reader_boxes_and_polygons_in_pixels(tmp_path):
    root = make_yolo(tmp_path / "y")
    spec = DatasetSpec("y", {"FORMAT": "yolo", "ROOT": str(root), "SPLIT": "train"})
    assert yolo.class_names(spec)[0] == ["Fire", "default", "smoke"]
    a, b, c, d = yolo.read(spec)
    assert named_boxes(a) == [("Fire", [24.0, 8.0, 40.0, 24.0]), ("smoke", [8.0, 8.0, 24.0, 24.0])]
    assert named_boxes(b) == [("default", [0.0, 0.0, 64.0, 32.0])]
    assert c["annotations"] == [] and d["annotations"] == []  # no label file, empty label file


def test_images_reader_lists_every_image_without_boxes(tmp_path):
    write_image(tmp_path / "cams" / "b.jpg", 32, 64)
    write_image(tmp_path / "cams" / "night" / "a.png", 40, 50)
    (tmp_path / "cams" / "notes.txt").write_text("not an image")
    spec = DatasetSpec("t", {"FORMAT": "images", "IMAGE_DIR": str(tmp_path / "cams")})
    assert images.class_names(spec)[0] == []
    dicts = images.read(spec)
    assert [(d["file_name"].split("cams/")[1], d["height"], d["width"], d["annotations"]) for d in dicts] == [
        ("b.jpg", 32, 64, []), ("night/a.png", 40, 50, [])]


def test_mapping_pass_renames_drops_ignored_and_names_the_file_of_an_unknown_class(tmp_path):
    root = make_yolo(tmp_path / "y")
    spec = DatasetSpec("y", {"FORMAT": "yolo", "ROOT": str(root), "SPLIT": "train"})
    mapping = ClassMapping(["smoke", "fire"], ["Fire:fire"], ["default"])
    a, b, _, _ = map_classes(yolo.read(spec), spec, mapping)
    assert [(x["category_id"], x["bbox"]) for x in a["annotations"]] == [(1, [24.0, 8.0, 40.0, 24.0]), (0, [8.0, 8.0, 24.0, 24.0])]
    assert b["annotations"] == []  # "default" ignored, the image kept
    assert all(set(x) == {"bbox", "bbox_mode", "category_id", "iscrowd"} for x in a["annotations"])
    with pytest.raises(CustomDatasetError, match=r"\['default'\][\s\S]*labels/b\.txt"):
        map_classes(yolo.read(spec), spec, ClassMapping(["smoke", "fire"], ["Fire:fire"], []))


def test_voc_box_that_cannot_be_read_is_an_error_only_for_a_used_class(tmp_path):
    from test_custom_data import voc_xml

    root = tmp_path / "v"
    (root / "Annotations").mkdir(parents=True)
    write_image(root / "JPEGImages" / "a.jpg", 32, 64)
    bad = voc_xml("a.jpg", [("smoke", (1, 1, 10, 10)), ("default", ("x", 1, 64, 32))])  # xmin not a number
    (root / "Annotations" / "a.xml").write_text(bad)
    spec = DatasetSpec("v", {"FORMAT": "voc", "ROOT": str(root)})
    (a,) = map_classes(voc.read(spec), spec, ClassMapping(["smoke"], [], ["default"]))  # ignored: never read
    assert [x["category_id"] for x in a["annotations"]] == [0]
    with pytest.raises(CustomDatasetError, match=r"a\.xml.*object 'default' has no valid <bndbox>"):
        map_classes(voc.read(spec), spec, ClassMapping(["smoke", "default"], [], []))
