"""Point-cloud embeddings and search: the feature pipeline, exact and faiss search, resumable and sharded builds,
and the `clip2point embed` / `clip2point search` commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import clip2point_hf  # noqa: F401  (registers the tasks)
from clip2point_apps.cli import main
from clip2point_apps.retrieval import ShapeIndex, _Source
from clip2point_hf import CLIP2PointModel, CLIP2PointProcessor
from clip2point_hf.errors import DatasetFormatError
from clip2point_hf.point_files import read_point_cloud
from conftest import save_tiny_model

NUM_SHAPES = 11
READ_SHAPE = _Source.load


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), num_points=128)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    """Eleven stretched blobs as .npy in two sub-folders, and a tetrahedron as .obj."""
    folder = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for i in range(NUM_SHAPES - 1):
        sub = folder / ("long" if i % 2 else "flat")
        sub.mkdir(exist_ok=True)
        cloud = rng.normal(size=(200, 3)) * rng.uniform(0.1, 1.0, size=3)
        np.save(sub / f"s{i:02d}.npy", cloud.astype(np.float32))
    v = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    faces = [(1, 3, 2), (1, 2, 4), (1, 4, 3), (2, 3, 4)]
    (folder / "tetra.obj").write_text(
        "".join(f"v {a} {b} {c}\n" for a, b, c in v) + "".join(f"f {a} {b} {c}\n" for a, b, c in faces)
    )
    return folder


def shape_files(folder) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix in (".npy", ".obj"))


def direct_embeddings(model_dir, clouds) -> torch.Tensor:
    """The model's `point_cloud_embeds`, normalised, computed with the processor and the model's forward (one cloud
    per processor call, so each is sampled as the pipeline samples it: a fresh seeded generator per cloud)."""
    model = CLIP2PointModel.from_pretrained(model_dir).eval()
    processor = CLIP2PointProcessor.from_pretrained(model_dir)
    pixel_values = torch.cat([processor([cloud])["pixel_values"] for cloud in clouds])
    with torch.no_grad():
        embeds = model(pixel_values=pixel_values).point_cloud_embeds
    return torch.nn.functional.normalize(embeds, dim=-1)


def direct_text_embedding(model_dir, text: str) -> torch.Tensor:
    model = CLIP2PointModel.from_pretrained(model_dir).eval()
    processor = CLIP2PointProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        return model(**processor(text=[f"image of a {text}"])).text_embeds[0]


# ---------------------------------------------------------------------------------------------------- pipeline


def test_feature_pipeline_equals_model(model_dir, shapes_dir):
    files = [*shape_files(shapes_dir)[:4], str(shapes_dir / "tetra.obj")]
    array = np.random.default_rng(1).normal(size=(300, 3)).astype(np.float32)
    extractor = pipeline("point-cloud-feature-extraction", model=str(model_dir))
    vectors = extractor([*files, array], batch_size=2)
    single = extractor(array, return_tensors=True)
    expected = direct_embeddings(model_dir, [read_point_cloud(f) for f in files] + [array])
    got = torch.tensor(vectors)
    assert got.shape == (len(files) + 1, 16)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, expected[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(got)))


# ---------------------------------------------------------------------------------------------------- search


def random_index(n=500, d=24, seed=0, clusters=20) -> tuple[ShapeIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    vectors = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))
    names = [f"shape{i}" for i in range(n)]
    return ShapeIndex.from_embeddings(vectors, names, [f"/x/{n}.ply" for n in names]), vectors


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int):
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = q @ v.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


def test_exact_search_equals_brute_force():
    index, vectors = random_index()
    queries = np.random.default_rng(5).normal(size=(7, vectors.shape[1]))
    scores, rows = index.search_rows(queries, k=10, exact=True)
    want_scores, want_rows = brute_force(vectors, queries, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    hits = index.search_vectors(queries[0], k=3)[0]
    assert [h.index for h in hits] == want_rows[0, :3].tolist()
    assert [h.name for h in hits] == [f"shape{r}" for r in want_rows[0, :3]]
    assert hits[0].path == f"/x/shape{want_rows[0, 0]}.ply"
    assert len(index.search_vectors(queries[:1], k=10_000)[0]) == len(index)  # k beyond the size: everything


def test_faiss_agrees_with_exact(tmp_path):
    pytest.importorskip("faiss")
    index, vectors = random_index(n=2000)
    queries = vectors[:50] + 0.1 * np.random.default_rng(3).normal(size=(50, vectors.shape[1]))
    _, exact = index.search_rows(queries, k=10, exact=True)

    index.add_faiss_index("IVF16,Flat", nprobe=16)  # visiting every cell: exactly the exact search
    _, rows = index.search_rows(queries, k=10)
    np.testing.assert_array_equal(rows, exact)

    index.add_faiss_index("HNSW32", ef_search=64)
    _, rows = index.search_rows(queries, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact)])
    assert recall >= 0.95
    index.save(tmp_path / "idx")
    loaded = ShapeIndex.load(tmp_path / "idx")
    assert loaded.has_faiss_index and loaded.config["faiss"] == {"factory": "HNSW32", "ef_search": 64}
    np.testing.assert_array_equal(loaded.search_rows(queries, k=10)[1], rows)
    np.testing.assert_array_equal(loaded.search_rows(queries, k=10, exact=True)[1], exact)


def test_text_and_shape_search_on_tiny_model(model_dir, shapes_dir, tmp_path):
    index = ShapeIndex.build(
        shapes_dir, model_dir, tmp_path / "idx", chunk_size=4, batch_size=3, progress=False
    )
    files = shape_files(shapes_dir)
    assert len(index) == NUM_SHAPES
    assert sorted(index.dataset["path"]) == files
    assert "long/s01" in index.dataset["name"] and "tetra" in index.dataset["name"]
    stored = direct_embeddings(model_dir, [read_point_cloud(p) for p in index.dataset["path"]])
    torch.testing.assert_close(index.embeddings, stored, atol=1e-5, rtol=1e-5)

    index = ShapeIndex.load(tmp_path / "idx")  # queries load the model named in the index
    hits = index.search_text("chair", k=4)
    scores = stored @ direct_text_embedding(model_dir, "chair")
    assert [h.index for h in hits] == scores.topk(4).indices.tolist()
    np.testing.assert_allclose([h.score for h in hits], scores.topk(4).values.numpy(), atol=1e-5)

    query = files[3]
    hits = index.search_shape(query, k=3)
    assert hits[0].path == query and hits[0].score == pytest.approx(1.0, abs=1e-5)
    scores = stored @ stored[index.dataset["path"].index(query)]
    assert [h.index for h in hits] == scores.topk(3).indices.tolist()
    assert [len(h) for h in index.search_text(["chair", "lamp"], k=2)] == [2, 2]


# ---------------------------------------------------------------------------------------------------- builds


class Counting:
    """Counts (and optionally breaks at) reads of the build's inputs."""

    def __init__(self, monkeypatch, fail_at: int | None = None):
        self.reads = []

        def load(source, i):
            if i == fail_at:
                raise KeyboardInterrupt("killed")
            self.reads.append(i)
            return READ_SHAPE(source, i)

        monkeypatch.setattr(_Source, "load", load)


def assert_same_index(a: ShapeIndex, b: ShapeIndex) -> None:
    assert list(a.dataset["name"]) == list(b.dataset["name"])
    assert list(a.dataset["path"]) == list(b.dataset["path"])
    torch.testing.assert_close(a.embeddings, b.embeddings, atol=1e-6, rtol=0)


def test_killed_build_resumes_to_the_same_index(model_dir, shapes_dir, tmp_path, monkeypatch):
    reference = ShapeIndex.build(shapes_dir, model_dir, tmp_path / "ref", chunk_size=4, progress=False)
    counter = Counting(monkeypatch, fail_at=9)  # in the third chunk (items 8-10)
    with pytest.raises(KeyboardInterrupt):
        ShapeIndex.build(shapes_dir, model_dir, tmp_path / "idx", chunk_size=4, progress=False)
    assert sorted(os.listdir(tmp_path / "idx" / "chunks")) == ["chunk-000000.npz", "chunk-000001.npz"]
    with pytest.raises(FileNotFoundError, match="unfinished"):
        ShapeIndex.load(tmp_path / "idx")
    counter = Counting(monkeypatch)
    resumed = ShapeIndex.build(shapes_dir, model_dir, tmp_path / "idx", chunk_size=4, progress=False)
    assert counter.reads == [8, 9, 10]  # only the lost chunk is embedded again
    assert_same_index(resumed, reference)
    assert_same_index(ShapeIndex.load(tmp_path / "idx"), reference)
    assert not (tmp_path / "idx" / "chunks").exists()
    with pytest.raises(ValueError, match="chunk_size: 4 -> 5"):
        ShapeIndex.build(shapes_dir, model_dir, tmp_path / "idx", chunk_size=5, progress=False)


def test_shards_merged_equal_a_single_build(model_dir, shapes_dir, tmp_path, monkeypatch):
    single = ShapeIndex.build(shapes_dir, model_dir, tmp_path / "single", chunk_size=3, progress=False)
    counter = Counting(monkeypatch)
    for shard in (1, 0):
        kwargs = dict(num_shards=2, shard_index=shard, chunk_size=3, progress=False)
        assert ShapeIndex.build(shapes_dir, model_dir, tmp_path / "sharded", **kwargs) is None
    assert sorted(counter.reads) == list(range(NUM_SHAPES))  # chunks 0, 2 to shard 0; 1, 3 to shard 1
    counter.reads.clear()
    merged = ShapeIndex.build(shapes_dir, model_dir, tmp_path / "sharded", chunk_size=3, progress=False)
    assert counter.reads == []
    assert_same_index(merged, single)


def test_unreadable_files_raise_or_are_skipped(model_dir, shapes_dir, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in shape_files(shapes_dir)[:3]:
        shutil.copy(f, folder)
    (folder / "notes.txt").write_text("not, numbers\n")
    with pytest.raises(DatasetFormatError, match=r"notes\.txt"):
        ShapeIndex.build(folder, model_dir, tmp_path / "a", progress=False)
    index = ShapeIndex.build(folder, model_dir, tmp_path / "b", on_error="skip", progress=False)
    assert len(index) == 3
    skipped = json.loads((tmp_path / "b" / "build.json").read_text())["skipped"]
    assert [s["name"] for s in skipped] == ["notes"]


def test_build_over_a_dataset(model_dir, tmp_path):
    from datasets import Array2D, Dataset, Features, Value

    clouds = np.random.default_rng(2).normal(size=(5, 64, 3)).astype(np.float32)
    features = Features({"points": Array2D((64, 3), "float32"), "name": Value("string")})
    ds = Dataset.from_dict({"points": clouds, "name": [f"c{i}" for i in range(5)]}, features=features)
    ds.save_to_disk(tmp_path / "saved")
    index = ShapeIndex.build(tmp_path / "saved", model_dir, tmp_path / "idx", chunk_size=2, progress=False)
    assert list(index.dataset["name"]) == [f"c{i}" for i in range(5)]
    torch.testing.assert_close(index.embeddings, direct_embeddings(model_dir, clouds), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- CLI


def clip2point(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "clip2point_apps.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_cli_embed_and_search(model_dir, shapes_dir, tmp_path, capsys):
    out = clip2point("embed", shapes_dir, "--model", model_dir, "-o", tmp_path / "s.index", "--chunk-size", 4)
    assert out.returncode == 0, out.stderr
    assert "11 shapes" in out.stdout

    out = clip2point("search", "chair", "--index", tmp_path / "s.index", "-k", 3, "-o", tmp_path / "hits.png")
    assert out.returncode == 0, out.stderr
    index = ShapeIndex.load(tmp_path / "s.index")
    expected = index.search_text("chair", k=3)
    lines = out.stdout.splitlines()
    assert [line.split()[2] for line in lines[:3]] == [h.name for h in expected]
    with Image.open(tmp_path / "hits.png") as image:
        assert image.width >= 3 * 224 and image.height >= 224
        cells = np.asarray(image.convert("L"))[30:250, 6:230]
        assert (cells < 200).any() and (cells == 255).any()  # a rendered shape on the white background

    like = shape_files(shapes_dir)[0]
    out = clip2point("search", "--like", like, "--index", tmp_path / "s.index", "-k", 2, "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert hits[0]["path"] == like and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)

    # Two shards, then the merge (in-process: the same `main`, without three more model loads).
    for shard in (0, 1):
        args = ("--num_shards", "2", "--shard_index", str(shard), "--chunk-size", "4")
        assert (
            main(["embed", str(shapes_dir), "--model", str(model_dir), "-o", str(tmp_path / "sh"), *args])
            == 0
        )
        assert "without --shard_index" in capsys.readouterr().out
    assert (
        main(
            [
                "embed",
                str(shapes_dir),
                "--model",
                str(model_dir),
                "-o",
                str(tmp_path / "sh"),
                "--chunk-size",
                "4",
            ]
        )
        == 0
    )
    assert_same_index(ShapeIndex.load(tmp_path / "sh"), index)

    out = clip2point("search", "chair", "--index", tmp_path / "nowhere.index")
    assert out.returncode == 2
    assert (
        out.stderr
        == f"clip2point search: error: {tmp_path / 'nowhere.index'}: not a shape index (no index_config.json and data/)\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("search", "chair", "--index", "INDEX"), "not a shape index (no index_config.json and data/)"),
        (("search", "--index", "INDEX"), "give either a query text or --like FILE"),
        (
            ("search", "chair", "--like", "x.ply", "--index", "INDEX"),
            "give either a query text or --like FILE",
        ),
        (("search", "--like", "missing.ply", "--index", "INDEX"), "--like missing.ply: file not found"),
        (("embed", "no_such_folder", "--model", "MODEL", "-o", "x.index"), "no_such_folder: not a folder"),
        (
            ("embed", "SHAPES", "--model", "MODEL", "-o", "x.index", "--num_shards", 2, "--shard_index", 2),
            "`shard_index` must be in [0, 2)",
        ),
    ],
)
def test_cli_user_errors_are_one_line(model_dir, shapes_dir, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    fill = {"INDEX": str(tmp_path), "MODEL": str(model_dir), "SHAPES": str(shapes_dir)}
    assert main([fill.get(str(a), str(a)) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_auto_faiss_above_the_exact_search_limit(model_dir, shapes_dir, tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    from clip2point_apps import retrieval

    monkeypatch.setattr(retrieval, "EXACT_SEARCH_MAX", 8)  # 11 shapes: above it
    index = ShapeIndex.build(shapes_dir, model_dir, tmp_path / "idx", progress=False)
    assert index.config["faiss"] == {"factory": "IVF4,Flat", "nprobe": 32}
    loaded = ShapeIndex.load(tmp_path / "idx")
    assert loaded.has_faiss_index
    queries = loaded.embeddings[:5]
    np.testing.assert_array_equal(
        loaded.search_rows(queries, 5)[1], loaded.search_rows(queries, 5, exact=True)[1]
    )


def test_build_over_a_loader_dataset_keeps_its_up_axis_and_readable_paths(model_dir, shapes_dir, tmp_path):
    from clip2point_hf.data import load_mesh_folder

    for cls in ("a", "b"):
        (tmp_path / "meshes" / cls / "train").mkdir(parents=True)
        shutil.copy(shapes_dir / "tetra.obj", tmp_path / "meshes" / cls / "train" / f"{cls}1.obj")
    data = load_mesh_folder(tmp_path / "meshes", num_points=64, up_axis="z", cache_dir=tmp_path / "cache")
    assert data["train"][0]["path"] == "a/train/a1.obj"  # relative to the dataset folder
    index = ShapeIndex.build(
        data, model_dir, tmp_path / "idx", split="train", paths_root=tmp_path / "meshes", progress=False
    )
    assert index.config["up_axis"] == "z"
    assert [os.path.isfile(p) for p in index.dataset["path"]] == [True, True]
    processor = CLIP2PointProcessor.from_pretrained(model_dir, up_axis="z")
    model = CLIP2PointModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        expected = model(
            pixel_values=processor([data["train"][0]["points"]])["pixel_values"]
        ).point_cloud_embeds
    torch.testing.assert_close(
        index.embeddings[:1], torch.nn.functional.normalize(expected, dim=-1), atol=1e-5, rtol=1e-5
    )
