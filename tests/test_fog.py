"""Synthetic fog (mic_det/datagen/fog.py, datasets/make_foggy.py) on tiny trees written here."""
import importlib.util
import json
import os
import sys

import cv2
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cityscapes_fixture import SCENES, write_cityscapes_tree  # noqa: E402

from mic_det.data import cityscapes as cs  # noqa: E402
from mic_det.datagen import fog  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 128
# A camera for 64 x 128 images (numbers chosen here, Cityscapes' JSON layout).
CAMERA = {
    "extrinsic": {"baseline": 0.2, "pitch": 0.0, "roll": 0.0, "x": 1.7, "y": 0.0, "yaw": 0.0, "z": 1.2},
    "intrinsic": {"fx": 100.0, "fy": 110.0, "u0": 60.0, "v0": 30.0},
}
BETA_NAMES = ("0.005", "0.01", "0.02")


def _expected_distance(p):
    """Distance from the camera centre written out from the pinhole model, per pixel."""
    b, fx, fy = CAMERA["extrinsic"]["baseline"], CAMERA["intrinsic"]["fx"], CAMERA["intrinsic"]["fy"]
    u0, v0 = CAMERA["intrinsic"]["u0"], CAMERA["intrinsic"]["v0"]
    v, u = np.mgrid[0 : p.shape[0], 0 : p.shape[1]].astype(np.float64)
    d = (p.astype(np.float64) - 1.0) / 256.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = b * fx / d
    x, y = (u - u0) * z / fx, (v - v0) * z / fy
    return np.sqrt(x * x + y * y + z * z)


def _p_for_depth(depth):
    """PNG value whose disparity gives (about) this depth with CAMERA."""
    d = CAMERA["extrinsic"]["baseline"] * CAMERA["intrinsic"]["fx"] / depth
    return int(round(d * 256 + 1))


def _stereo_map():
    """Disparity PNG values: far at the top (100 m), near at the bottom (5 m), a far block
    (300 m) in the middle; holes: the sky band (rows 0..7, all invalid), Cityscapes'
    left band without stereo (columns 0..5), and a hole inside the near region."""
    p = np.zeros((H, W), np.uint16)
    rows = np.linspace(100.0, 5.0, H)
    for r in range(H):
        p[r] = _p_for_depth(rows[r])
    p[20:30, 70:100] = _p_for_depth(300.0)
    p[:8] = 0
    p[:, :6] = 0
    p[48:54, 30:40] = 0  # interior hole, neighbours at 20-28 m
    return p


def _write_stereo(root, split, city, base, p):
    ddir = os.path.join(root, "cityscapes", "disparity", split, city)
    cdir = os.path.join(root, "cityscapes", "camera", split, city)
    os.makedirs(ddir, exist_ok=True)
    os.makedirs(cdir, exist_ok=True)
    assert cv2.imwrite(os.path.join(ddir, f"{base}_disparity.png"), p)
    with open(os.path.join(cdir, f"{base}_camera.json"), "w") as f:
        json.dump(CAMERA, f)


def _write_image(root, split, city, base, img):
    idir = os.path.join(root, "cityscapes", "leftImg8bit", split, city)
    os.makedirs(idir, exist_ok=True)
    assert cv2.imwrite(os.path.join(idir, f"{base}_leftImg8bit.png"), img)


def _foggy_path(root, split, city, base, beta):
    return os.path.join(root, "foggy_cityscapes", "leftImg8bit_foggy", split, city,
                        f"{base}_leftImg8bit_foggy_beta_{beta}.png")


@pytest.fixture(scope="module")
def make_foggy():
    spec = importlib.util.spec_from_file_location("make_foggy", os.path.join(REPO, "datasets", "make_foggy.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _restore_registration():
    yield
    cs.register_all_cityscapes_da(os.getenv("DETECTRON2_DATASETS", "datasets"))


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory, make_foggy):
    """A black frame, fixed white atmospheric light, no smoothing: I = 1 - t exactly
    (up to 8-bit rounding), so t can be read back from the output."""
    root = str(tmp_path_factory.mktemp("flat"))
    base = "aachen_000000_000019"
    _write_image(root, "val", "aachen", base, np.zeros((H, W, 3), np.uint8))
    p = _stereo_map()
    _write_stereo(root, "val", "aachen", base, p)
    make_foggy.main(["cityscapes", "--root", root, "--splits", "val", "--atmospheric-light", "1",
                     "--median", "0", "--guided-radius", "0"])
    t = {}
    for beta in BETA_NAMES:
        out = cv2.imread(_foggy_path(root, "val", "aachen", base, beta), cv2.IMREAD_UNCHANGED)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8
        t[beta] = 1.0 - out.astype(np.float64) / 255.0
    return root, p, t


# ---------------------------------------------------------------------------------------
def test_beta_names():
    assert [fog.format_beta(b) for b in (0.005, 0.01, 0.02, "0.020")] == ["0.005", "0.01", "0.02", "0.02"]
    for beta in BETA_NAMES:  # our names are those the registered datasets look for
        want = "x_000000_000001" + cs.FOGGY_IMAGE_SUFFIX.format(beta=beta)
        assert fog.foggy_file_name("x_000000_000001", beta) == want
    assert set(BETA_NAMES) == set(cs.FOGGY_BETAS)


def test_disparity_to_distance(tmp_path):
    p = np.array([[0, 1, 257, 513], [5121, 65535, 0, 300]] * 2, np.uint16)
    path = str(tmp_path / "d.png")
    cv2.imwrite(path, p)
    disp, valid = fog.read_disparity(path)
    assert valid.tolist() == (p > 0).tolist()
    np.testing.assert_allclose(disp[valid], (p[valid].astype(np.float64) - 1) / 256, rtol=1e-6)
    cam = fog.Camera.from_json(CAMERA)
    dist = fog.cityscapes_distance(disp, valid, cam, max_distance=1000.0)
    assert np.isnan(dist[~valid]).all()
    expected = np.minimum(_expected_distance(p), 1000.0)
    np.testing.assert_allclose(dist[valid], expected[valid], rtol=1e-5)
    assert dist[0, 1] == 1000.0  # p = 1: disparity 0, infinitely far -> max distance


def test_cli_names_and_exact_transmittance(flat_run):
    root, p, t = flat_run
    out_dir = os.path.join(root, "foggy_cityscapes", "leftImg8bit_foggy", "val", "aachen")
    assert sorted(os.listdir(out_dir)) == sorted(
        f"aachen_000000_000019_leftImg8bit_foggy_beta_{b}.png" for b in BETA_NAMES)
    valid = p > 0
    dist = np.minimum(_expected_distance(p), 1000.0)
    for beta in BETA_NAMES:
        np.testing.assert_array_equal(t[beta][..., 0], t[beta][..., 2])  # grey light on black: grey fog
        expected = np.exp(-float(beta) * dist)
        err = np.abs(t[beta][..., 1] - expected)[valid]
        assert err.max() <= 0.5 / 255 + 1e-6, (beta, err.max())


def test_far_pixels_closer_to_airlight(flat_run):
    _, p, t = flat_run
    for beta in BETA_NAMES:
        tb = t[beta][..., 1]  # |I - L| = t * |R - L| = t here
        assert tb[60, 64] > tb[12, 64] > tb[25, 80]  # 5-6 m, ~ 87 m, the 300 m block
        assert tb[:8].max() <= tb[8:].min()  # the sky band (no stereo, top rows): farthest of all
    assert t["0.005"][:8, :, 1].max() < t["0.005"][8:, :, 1].min()  # strictly (before 8-bit rounding hides it)
    assert t["0.005"][:8, 60:, 1].max() <= np.exp(-5.0) + 0.5 / 255  # sky = max distance (1000 m)


def test_holes_filled_from_neighbours(flat_run):
    _, p, t = flat_run
    dist = _expected_distance(p)
    for beta in BETA_NAMES:
        tb = t[beta][..., 1]
        assert np.isfinite(tb).all()
        # interior hole: the farther of its row neighbours (columns 29 and 40), not airlight
        for r in range(48, 54):
            want = np.exp(-float(beta) * max(dist[r, 29], dist[r, 40]))
            np.testing.assert_allclose(tb[r, 30:40], want, atol=0.5 / 255 + 1e-6)
        # left band without stereo: its row's first valid pixel (column 6)
        for r in range(8, H):
            np.testing.assert_allclose(tb[r, :6], np.exp(-float(beta) * dist[r, 6]), atol=0.5 / 255 + 1e-6)
    assert t["0.02"][48:54, 30:40, 1].min() > 0.5  # far from the atmospheric light (t < 0.02 there)


def test_fill_distance_rules():
    nan = np.nan
    d = np.array(
        [
            [nan, nan, nan, nan],
            [nan, 10.0, nan, 50.0],
            [nan, 5.0, nan, 5.0],
        ],
        np.float32,
    )
    out = fog.fill_distance(d, max_distance=200.0, median=0)
    assert np.isfinite(out).all()
    # sky: the missing run from the top of columns 1 and 3 (which have data) -> max distance;
    # columns 0 and 2 have no data at all, so they are not sky: filled along the rows
    assert out[0].tolist() == [200.0] * 4
    assert out[1].tolist() == [10.0, 10.0, 50.0, 50.0]  # border: the one neighbour; inside: the farther
    assert out[2].tolist() == [5.0] * 4
    assert fog.fill_distance(d, max_distance=200.0, median=5).shape == d.shape


def test_fill_distance_column_fill_and_sky_mask():
    nan = np.nan
    d = np.array([[20.0, 30.0, 40.0], [nan, nan, nan], [4.0, 4.0, 50.0]], np.float32)
    out = fog.fill_distance(d, max_distance=100.0, median=0)
    assert out[1].tolist() == [20.0, 30.0, 50.0]  # the farther of the pixels above and below
    sky = np.zeros((3, 3), bool)
    sky[0, 0] = True  # a labelled sky pixel with (noisy) stereo is still sky
    out = fog.fill_distance(d, sky=sky, max_distance=100.0, median=0)
    assert out[0, 0] == 100.0
    assert fog.fill_distance(np.full((2, 2), nan, np.float32), max_distance=7.0).tolist() == [[7.0] * 2] * 2


def test_sky_labels_used_when_present(tmp_path, make_foggy):
    root = str(tmp_path)
    base = "lindau_000000_000019"
    _write_image(root, "val", "lindau", base, np.zeros((H, W, 3), np.uint8))
    p = np.full((H, W), _p_for_depth(5.0), np.uint16)  # everything near, all valid
    _write_stereo(root, "val", "lindau", base, p)
    labels = np.full((H, W), 7, np.uint8)  # road
    labels[:10, :40] = 23  # sky (cityscapesscripts label id)
    gdir = os.path.join(root, "cityscapes", "gtFine", "val", "lindau")
    os.makedirs(gdir)
    cv2.imwrite(os.path.join(gdir, f"{base}_gtFine_labelIds.png"), labels)
    args = ["cityscapes", "--root", root, "--splits", "val", "--betas", "0.02", "--atmospheric-light", "1",
            "--median", "0", "--guided-radius", "0"]
    make_foggy.main(args)
    out = cv2.imread(_foggy_path(root, "val", "lindau", base, "0.02"))
    assert out[:10, :40].min() == 255  # sky -> 1000 m -> the atmospheric light
    assert out[20:, :].max() < 40  # near road: t ~ 0.9
    make_foggy.main(args + ["--no-sky-labels", "--overwrite"])
    assert cv2.imread(_foggy_path(root, "val", "lindau", base, "0.02"))[:10, :40].max() < 40
    cv2.imwrite(os.path.join(gdir, f"{base}_gtFine_labelIds.png"), np.zeros((H, W), np.uint8))
    make_foggy.main(args + ["--overwrite"])  # placeholder labels (test split): ignored
    assert cv2.imread(_foggy_path(root, "val", "lindau", base, "0.02"))[:10, :40].max() < 40


def test_larger_beta_lower_contrast_and_dataset_loads(tmp_path, make_foggy):
    """The gtFine fixture tree without foggy images; the tool with its defaults (estimated
    atmospheric light, median and guided filters) renders them; the registered datasets
    load them with their annotations."""
    root = str(tmp_path / "datasets")
    bases = write_cityscapes_tree(root, foggy=False)
    for (split, city, base) in SCENES:
        _write_stereo(root, split, city, base, _stereo_map())
    summary = make_foggy.main(["cityscapes", "--root", root])
    assert summary == {"frames": 6, "written": 18, "skipped": 0}
    for (split, city, base) in SCENES:
        clear = cv2.imread(os.path.join(root, "cityscapes", "leftImg8bit", split, city, f"{base}_leftImg8bit.png"))
        stds = [clear.astype(np.float64).std()]
        for beta in BETA_NAMES:
            foggy = cv2.imread(_foggy_path(root, split, city, base, beta))
            assert foggy.shape == clear.shape
            stds.append(foggy.astype(np.float64).std())
        assert stds[0] > stds[1] > stds[2] > stds[3], stds
    cs.register_all_cityscapes_da(root)
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get("foggy_cityscapes_val")
    assert [os.path.basename(d["file_name"]) for d in dicts] == [
        f"{b}_leftImg8bit_foggy_beta_0.02.png" for b in bases["val"]]
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    clear_val = DatasetCatalog.get("cityscapes_fine_val")
    assert [d["annotations"] for d in dicts] == [d["annotations"] for d in clear_val]
    assert len(DatasetCatalog.get("foggy_cityscapes_all_betas_train")) == 3 * len(bases["train"])
    # a second run keeps what exists
    assert make_foggy.main(["cityscapes", "--root", root, "--splits", "val"])["written"] == 0


def test_missing_disparity_is_an_error_naming_the_path(tmp_path):
    root = str(tmp_path)
    _write_image(root, "train", "ulm", "ulm_000000_000019", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"disparity.*ulm_000000_000019_disparity\.png"):
        fog.make_foggy_cityscapes(root, ["train"])


def test_guided_filter():
    rng = np.random.default_rng(0)
    src = rng.random((40, 60)).astype(np.float32)
    flat = np.full((40, 60), 0.3, np.float32)
    np.testing.assert_array_equal(fog.guided_filter(flat, src, 0, 1e-3), src)
    # constant input stays constant whatever the guide
    np.testing.assert_allclose(fog.guided_filter(src, np.full_like(src, 0.4), 5, 1e-3), 0.4, atol=1e-5)
    # a step in t that coincides with a step in the guide survives; with a flat guide it is blurred
    step = np.zeros((40, 60), np.float32)
    step[:, 30:] = 1.0
    edge_kept = fog.guided_filter(step, step, 5, 1e-3)
    blurred = fog.guided_filter(flat, step, 5, 1e-3)
    assert np.abs(edge_kept - step).max() < 0.02
    assert abs(blurred[20, 29] - 5 / 11) < 1e-5


def test_colour_guided_filter_keeps_equal_brightness_edges():
    guide = np.zeros((30, 40, 3), np.float32)
    guide[:, :20] = (0.8, 0.5, 0.2)  # blue-ish and orange-ish (BGR) of the same mean brightness
    guide[:, 20:] = (0.2, 0.5, 0.8)
    step = np.zeros((30, 40), np.float32)
    step[:, 20:] = 1.0
    grey = fog.guided_filter(guide.mean(axis=2), step, 4, 1e-4)
    colour = fog.guided_filter(guide, step, 4, 1e-4)
    assert np.abs(grey - step).max() > 0.3  # the grey guide sees no edge: blurred
    assert np.abs(colour - step).max() < 0.01
    np.testing.assert_allclose(fog.guided_filter(guide, np.full((30, 40), 0.7, np.float32), 4, 1e-4), 0.7, atol=1e-4)


def test_atmospheric_light_estimate_and_render():
    img = np.full((60, 80, 3), (20, 40, 60), np.uint8)
    img[5:25, 50:75] = (200, 210, 230)  # a bright, sky-like patch (BGR)
    light = fog.estimate_atmospheric_light(img)
    np.testing.assert_allclose(light, np.array([200, 210, 230]) / 255.0, atol=1e-6)
    dist = np.full((60, 80), 50.0, np.float32)
    a, t = fog.render_fog(img, dist, 0.02)
    b, _ = fog.render_fog(img, dist, 0.02)
    np.testing.assert_array_equal(a, b)  # deterministic
    np.testing.assert_allclose(t, np.exp(-1.0), rtol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        fog.render_fog(img, np.full((60, 80), np.nan, np.float32), 0.02)


def test_folder_mode_ground_plane_prior(tmp_path, make_foggy):
    src, dst = tmp_path / "in", tmp_path / "out"
    (src / "cam1").mkdir(parents=True)
    img = np.full((100, 60, 3), 40, np.uint8)
    cv2.imwrite(str(src / "cam1" / "a.png"), img)
    cv2.imwrite(str(src / "b.jpg"), img)
    (src / "labels.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # not an image: ignored
    summary = make_foggy.main(["folder", "--input", str(src), "--output", str(dst), "--beta", "0.02",
                               "--horizon", "0.4", "--atmospheric-light", "0.9", "--max-distance", "500"])
    assert summary["written"] == 2
    assert sorted(os.path.relpath(os.path.join(d, f), dst) for d, _, fs in os.walk(dst) for f in fs) == [
        "b.jpg", os.path.join("cam1", "a.png")]
    out = cv2.imread(str(dst / "cam1" / "a.png"))[..., 1].astype(np.float64)
    col = out[:, 30]
    horizon = int(0.4 * 99)
    assert np.all(np.diff(col[horizon + 1 :]) <= 0)  # fog decreases toward the bottom rows
    assert col[-1] < 60 < 200 < col[horizon + 2]  # bottom: nearly clear; near the horizon: nearly airlight
    assert np.abs(col[: horizon + 1] - 0.9 * 255).max() <= 1.0  # above the horizon: max distance
    assert np.ptp(out, axis=1).max() <= 1.0  # the prior is constant along rows
    with pytest.raises(ValueError, match="must not be the input"):
        fog.make_foggy_folder(str(src), str(src / "fog"), 0.02)


def test_ground_plane_distance_values():
    d = fog.ground_plane_distance(11, 4, horizon=0.0, near_distance=2.0, max_distance=100.0)
    assert d.shape == (11, 4)
    # row v is v rows below the horizon (row 0): distance 2 * 10 / v
    np.testing.assert_allclose(d[1:, 0], 20.0 / np.arange(1, 11), rtol=1e-6)
    assert d[0, 0] == 100.0
    up = fog.ground_plane_distance(11, 1, horizon=-1.0, near_distance=2.0)
    assert np.isfinite(up).all() and up[0, 0] == pytest.approx(2.0 * 20 / 10)  # horizon above the image
