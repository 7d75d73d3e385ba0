"""The web page's backend without a browser: its scores are the zero-shot pipeline's, its pictures are the
processor's, its 3D preview is a valid glTF of the object, and `clip2point serve` fails cleanly without
Gradio. The page itself, in a real browser, is tests/test_web_browser.py."""

from __future__ import annotations

import configparser
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import clip2point_hf  # noqa: F401  (registers the task)
from clip2point_apps.visualization import save_views_image
from clip2point_apps.web import PageBackend, write_preview_glb
from clip2point_hf import CLIP2PointFeatureExtractor, CLIP2PointModel, CLIP2PointProcessor
from clip2point_hf.point_files import read_mesh
from clip2point_hf.points_clip2point import convert_up_axis
from clip2point_hf.samples import make_sample_point_cloud
from conftest import make_tiny_config, make_tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
LABELS = "chair, cone, lamp"


def save_model(folder: Path, **processor_settings) -> Path:
    torch.manual_seed(0)
    CLIP2PointModel(make_tiny_config(num_views=6)).save_pretrained(folder)
    CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(image_size=32, num_points=256, **processor_settings), make_tiny_tokenizer()
    ).save_pretrained(folder)
    return folder


def write_ascii_ply(path: Path, points: np.ndarray) -> Path:
    header = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    path.write_text(header + "\n".join(" ".join(f"{v:.6f}" for v in p) for p in points) + "\n")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("web-model"), views="reference10", up_axis="y")


@pytest.fixture(scope="module")
def backend(model_dir, tmp_path_factory):
    classifier = pipeline("zero-shot-point-cloud-classification", model=str(model_dir))
    return PageBackend(classifier, workdir=tmp_path_factory.mktemp("web-work"))


def read_glb(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse a GLB independently of the writer: header, JSON chunk, BIN chunk, float accessors."""
    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_len, json_kind = struct.unpack_from("<I4s", data, 12)
    assert json_kind == b"JSON" and json_len % 4 == 0
    document = json.loads(data[20 : 20 + json_len])
    bin_len, bin_kind = struct.unpack_from("<I4s", data, 20 + json_len)
    assert bin_kind == b"BIN\0" and bin_len == document["buffers"][0]["byteLength"]
    blob = data[28 + json_len : 28 + json_len + bin_len]
    arrays = {}
    for name, index in document["meshes"][0]["primitives"][0]["attributes"].items():
        accessor = document["accessors"][index]
        view = document["bufferViews"][accessor["bufferView"]]
        raw = blob[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
        arrays[name] = np.frombuffer(raw, "<f4").reshape(accessor["count"], 3)
    return document, arrays


def test_classify_file_matches_the_pipeline_on_the_same_file(backend, model_dir, tmp_path):
    path = write_ascii_ply(tmp_path / "cup.ply", make_sample_point_cloud("cup", 1500, seed=3))
    expected = pipeline("zero-shot-point-cloud-classification", model=str(model_dir))(
        str(path), candidate_labels=[label.strip() for label in LABELS.split(",")]
    )
    result = backend.classify(str(path), "chair", LABELS, "y", "reference10")  # the file wins over the sample
    assert [s["label"] for s in result.scores] == [s["label"] for s in expected]
    np.testing.assert_allclose([s["score"] for s in result.scores], [s["score"] for s in expected], atol=1e-6)


def test_up_axis_and_views_match_a_folder_saved_with_them(backend, tmp_path):
    """The page's per-setting pipeline equals the pipeline of a model folder saved with those settings."""
    other = save_model(tmp_path / "z6", views="reference6", up_axis="z")
    sample = make_sample_point_cloud("lamp", 4096, seed=0)  # the page's cloud of a sample object
    expected = pipeline("zero-shot-point-cloud-classification", model=str(other))(
        sample, candidate_labels=["chair", "cone", "lamp"]
    )
    got = backend.classify(None, "lamp", LABELS, "z", "reference6").scores
    assert [s["label"] for s in got] == [s["label"] for s in expected]
    np.testing.assert_allclose([s["score"] for s in got], [s["score"] for s in expected], atol=1e-6)
    # The settings matter: the default (y, reference10) scores differ.
    default = backend.classify(None, "lamp", LABELS, "y", "reference10").scores
    assert not np.allclose(sorted(s["score"] for s in got), sorted(s["score"] for s in default))


def test_views_image_is_the_processors_picture(backend, tmp_path):
    result = backend.classify(None, "cone", LABELS, "y", "reference6")
    reference = save_views_image(
        backend.pipeline_for("y", "reference6").front_end,
        make_sample_point_cloud("cone", 4096, seed=0),
        tmp_path / "ref.png",
    )
    got = Image.open(result.views_image)
    assert got.size == reference.size
    assert np.array_equal(np.asarray(got), np.asarray(reference))


def test_bad_input_is_one_line(backend, tmp_path):
    with pytest.raises(ValueError, match="upload a 3D file or pick a sample"):
        backend.classify(None, None, LABELS, "y", "reference10")
    with pytest.raises(ValueError, match="candidate_labels"):
        backend.classify(None, "cup", " , ", "y", "reference10")
    with pytest.raises(ValueError, match="views must be one of"):
        backend.classify(None, "cup", LABELS, "y", "nine")
    bad = tmp_path / "bad.xyz"
    bad.write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match=r"bad\.xyz"):
        backend.classify(str(bad), None, LABELS, "y", "reference10")


def test_preview_of_points_is_one_tetrahedron_per_point_turned_upright(tmp_path):
    cloud = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    write_preview_glb(tmp_path / "p.glb", cloud, None, up_axis="z")
    document, arrays = read_glb(tmp_path / "p.glb")
    positions = arrays["POSITION"]
    assert positions.shape == (300 * 12, 3) and arrays["COLOR_0"].shape == positions.shape
    centres = positions.reshape(300, 12, 3).mean(
        axis=1
    )  # a regular tetrahedron's corners average to its centre
    moved = cloud - cloud.mean(axis=0)
    expected = convert_up_axis(torch.from_numpy(moved / np.linalg.norm(moved, axis=1).max()), "z").numpy()
    np.testing.assert_allclose(centres, expected, atol=1e-5)
    accessor = document["accessors"][document["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    np.testing.assert_allclose(accessor["min"], positions.min(axis=0))
    np.testing.assert_allclose(accessor["max"], positions.max(axis=0))


def test_preview_of_a_mesh_keeps_its_triangles_with_outward_normals(backend, tmp_path):
    off = tmp_path / "tetra.off"
    off.write_text("OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n")
    result = backend.classify(str(off), None, LABELS, "y", "reference6")
    _, arrays = read_glb(Path(result.preview))
    mesh = read_mesh(off)
    assert arrays["POSITION"].shape == (len(mesh.faces) * 3, 3)
    corners = arrays["POSITION"].reshape(-1, 3, 3)
    centre = corners.reshape(-1, 3).mean(axis=0)
    normals = arrays["NORMAL"].reshape(-1, 3, 3)[:, 0]
    # Each face's normal is perpendicular to its edges and points away from the solid's centre.
    np.testing.assert_allclose(np.einsum("fd,fd->f", normals, corners[:, 1] - corners[:, 0]), 0, atol=1e-6)
    assert (np.einsum("fd,fd->f", normals, corners.mean(axis=1) - centre) > 0).all()


def test_requirements_txt_is_install_requires_plus_the_demo_extra():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    declared = config["options"]["install_requires"].split()
    declared += config["options.extras_require"]["demo"].split()
    lines = (REPO / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == declared


def test_serve_without_gradio_says_how_to_install_it(tmp_path):
    """A `gradio` that cannot be imported (a None entry in sys.modules) stands for an install without it."""
    code = "import sys; sys.modules['gradio'] = None; from clip2point_apps.cli import main; sys.exit(main(['serve']))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert (
        run.stderr.strip()
        == "clip2point serve: error: the web page needs Gradio: pip install 'clip2point-hf[demo]'"
    )
    assert run.stdout == ""


def test_core_package_does_not_import_gradio():
    code = (
        "import sys, clip2point_hf, clip2point_apps.cli, clip2point_apps.web; print('gradio' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.stdout.strip() == "False", run.stderr


def sample_index(retrieval, model_dir, tmp_path):
    """Four sample objects as .ply files, and their index."""
    folder = tmp_path / "shapes"
    folder.mkdir()
    for name in ("chair", "cone", "lamp", "bowl"):
        write_ascii_ply(folder / f"{name}.ply", make_sample_point_cloud(name, 800, seed=0))
    return folder, retrieval.ShapeIndex.build(
        folder, str(model_dir), tmp_path / "index", faiss=None, progress=False
    )


def test_search_tab_finds_a_shape_itself_first(model_dir, tmp_path):
    """The search tab's callback over a real index (skipped where `clip2point_apps.retrieval` is absent)."""
    retrieval = pytest.importorskip("clip2point_apps.retrieval")
    from clip2point_apps.web import search_index

    folder, shapes = sample_index(retrieval, model_dir, tmp_path)
    table = search_index(
        shapes, "a chair", str(folder / "cone.ply"), 3, tmp_path / "hits.png"
    )  # the file wins
    rows = [line.split("|")[2:4] for line in table.splitlines()[2:]]
    assert (
        len(rows) == 3 and rows[0][0].strip() == "cone" and float(rows[0][1]) == pytest.approx(1.0, abs=1e-4)
    )
    assert Image.open(tmp_path / "hits.png").size[0] > 0
    table = search_index(shapes, "a chair", None, 4, tmp_path / "text.png")
    scores = [float(line.split("|")[3]) for line in table.splitlines()[2:]]
    names = sorted(line.split("|")[2].strip() for line in table.splitlines()[2:])
    assert names == ["bowl", "chair", "cone", "lamp"] and scores == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match="type a description or upload a shape"):
        search_index(shapes, "  ", None, 3, tmp_path / "none.png")


@pytest.mark.parametrize("axis", ["x", "-y"])
def test_every_signed_up_axis_is_offered_and_matches_the_pipeline_call(backend, model_dir, axis):
    """The page offers the six axes the renderer takes; its scores are the pipeline's `up_axis=` call's."""
    sample = make_sample_point_cloud("lamp", 4096, seed=0)
    expected = pipeline("zero-shot-point-cloud-classification", model=str(model_dir))(
        sample, candidate_labels=[label.strip() for label in LABELS.split(",")], up_axis=axis
    )
    got = backend.classify(None, "lamp", LABELS, axis, "reference10").scores
    assert [s["label"] for s in got] == [s["label"] for s in expected]
    np.testing.assert_allclose([s["score"] for s in got], [s["score"] for s in expected], atol=1e-6)
    with pytest.raises(ValueError, match="up axis must be one of"):
        backend.classify(None, "lamp", LABELS, "w", "reference10")


def test_search_tab_finds_shapes_in_a_photo(model_dir, tmp_path):
    """A photo goes through the image tower; a model without one is one line saying so."""
    retrieval = pytest.importorskip("clip2point_apps.retrieval")
    from clip2point_apps.web import search_index
    from clip2point_hf import CLIP2PointForPreTraining

    _, shapes = sample_index(retrieval, model_dir, tmp_path)
    photo = tmp_path / "photo.png"
    pixels = np.full((40, 40, 3), 255, np.uint8)
    pixels[10:30, 15:25] = (40, 160, 40)
    Image.fromarray(pixels).save(photo)
    with pytest.raises(OSError, match="has no image tower"):
        search_index(shapes, None, None, 3, tmp_path / "none.png", photo=str(photo))
    torch.manual_seed(0)
    encoder = retrieval.PhotoEncoder.from_model(CLIP2PointForPreTraining(make_tiny_config(num_views=6)))
    shapes.image_encoder = encoder
    table = search_index(
        shapes, "a chair", None, 3, tmp_path / "hits.png", photo=str(photo)
    )  # the photo wins
    names = [line.split("|")[2].strip() for line in table.splitlines()[2:]]
    scores = shapes.embeddings @ torch.from_numpy(encoder.embed([photo])[0])
    assert names == [shapes.dataset["name"][i] for i in scores.topk(3).indices.tolist()]
    with Image.open(tmp_path / "hits.png") as picture:
        cell = np.asarray(picture.convert("RGB")).astype(int)[24:248, 6:230]
    assert ((cell[..., 1] > 120) & (cell[..., 0] < 80)).any()  # the green photo is drawn first
