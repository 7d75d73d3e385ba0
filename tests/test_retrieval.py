"""Point-cloud embeddings and search: the feature pipeline, exact and faiss search, resumable and sharded builds,
text, shape and photo queries, indexes searched from anywhere, sharing on the Hub, and the `clip2point embed` /
`clip2point search` commands."""

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
from clip2point_apps.retrieval import (
    IMAGE_ENCODER_DIR,
    PhotoEncoder,
    ShapeIndex,
    _Source,
    embed_texts,
    query_prompt,
)
from clip2point_hf import (
    CLIP2PointFeatureExtractor,
    CLIP2PointForPreTraining,
    CLIP2PointModel,
    CLIP2PointProcessor,
)
from clip2point_hf.errors import DatasetFormatError
from clip2point_hf.point_files import read_point_cloud
from conftest import (
    capture_hub_uploads,
    make_tiny_clip,
    make_tiny_config,
    make_tiny_tokenizer,
    save_tiny_model,
)

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


@pytest.mark.slow  # embed and search end to end
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


# ---------------------------------------------------------------------------------------------------- text queries


@pytest.mark.parametrize(
    "query, template, prompt",
    [
        ("a horse", "image of a {}", "image of a horse"),
        ("an old chair", "image of a {}", "image of an old chair"),
        ("The lamp", "image of a {}", "image of The lamp"),
        ("two chairs", "image of a {}", "image of two chairs"),
        ("horse", "image of a {}", "image of a horse"),  # a class name: exactly the zero-shot prompt
        ("chair with armrests", "image of a {}", "image of a chair with armrests"),
        ("image of a red car", "image of a {}", "image of a red car"),  # already a prompt
        ("  a   horse ", "image of a {}", "image of a horse"),
        ("a horse", "{}", "a horse"),
        ("a horse", "a {} in a room", "a horse in a room"),
        ("horse", "a photo of {}", "a photo of horse"),
    ],
)
def test_query_prompt(query, template, prompt):
    assert query_prompt(query, template) == prompt


def test_a_horse_is_encoded_without_a_doubled_article(model_dir):
    embedder = pipeline("point-cloud-feature-extraction", model=str(model_dir))
    tokenizer = embedder.processor.tokenizer
    sent = []
    real_call = type(tokenizer).__call__

    def recording(self, text, *args, **kwargs):
        sent.extend(text)
        return real_call(self, text, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(tokenizer), "__call__", recording)
        vector = embed_texts(embedder, ["a horse"])[0]
    assert sent == ["image of a horse"]
    assert tokenizer(sent)["input_ids"] == tokenizer(["image of a horse"])["input_ids"]
    expected = direct_text_embedding(model_dir, "horse")  # the model on "image of a horse"
    torch.testing.assert_close(torch.from_numpy(vector), expected, atol=1e-5, rtol=1e-5)
    doubled = embed_texts(embedder, ["image of a a horse"])[0]  # control: the doubled prompt differs
    assert not np.allclose(doubled, vector, atol=1e-3)


# ---------------------------------------------------------------------------------------------------- photo queries


def write_photo(path, colour=(200, 30, 30), size=(48, 48)):
    """A square disk of `colour` on white: what a rendering of a round object looks like."""
    yy, xx = np.mgrid[: size[1], : size[0]]
    disk = (xx - size[0] / 2) ** 2 + (yy - size[1] / 2) ** 2 < (min(size) / 3) ** 2
    pixels = np.full((size[1], size[0], 3), 255, np.uint8)
    pixels[disk] = colour
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def photo_model(tmp_path_factory):
    """A model folder as examples/pretrain.py writes it (the CLIP2PointModel of a pre-training model, and its frozen
    image tower in image_encoder/), and the pre-training model itself."""
    folder = tmp_path_factory.mktemp("photo-model")
    torch.manual_seed(3)
    pretraining = CLIP2PointForPreTraining(make_tiny_config(num_views=6)).eval()
    pretraining.clip2point.save_pretrained(folder)
    CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(views="reference6", image_size=32, num_points=128), make_tiny_tokenizer()
    ).save_pretrained(folder)
    PhotoEncoder.from_model(pretraining).save_pretrained(folder / IMAGE_ENCODER_DIR)
    return folder, pretraining


def pretraining_image_embedding(pretraining, photo) -> torch.Tensor:
    """The photo as pre-training feeds an RGB rendering to the frozen image tower (load_rgb_image, CLIP mean/std)."""
    from clip2point_hf.data import load_rgb_image
    from clip2point_hf.data.transforms import CLIP_MEAN, CLIP_STD

    size = pretraining.config.vision_config.image_size
    pixels = (
        load_rgb_image(Image.open(photo), size) - torch.tensor(CLIP_MEAN)[:, None, None]
    ) / torch.tensor(CLIP_STD)[:, None, None]
    with torch.no_grad():
        embeds = pretraining.get_image_features(pixels[None]).pooler_output
    return torch.nn.functional.normalize(embeds, dim=-1)[0]


def test_photo_search_goes_through_the_pretraining_image_tower(photo_model, shapes_dir, tmp_path):
    folder, pretraining = photo_model
    index = ShapeIndex.build(shapes_dir, folder, tmp_path / "idx", progress=False)
    photo = write_photo(tmp_path / "photo.png")
    hits = index.search_image(photo, k=4)
    scores = index.embeddings @ pretraining_image_embedding(pretraining, photo)
    assert [h.index for h in hits] == scores.topk(4).indices.tolist()
    np.testing.assert_allclose([h.score for h in hits], scores.topk(4).values.numpy(), atol=1e-4)
    two = index.search_image([photo, str(write_photo(tmp_path / "blue.png", (20, 40, 220)))], k=2)
    assert [h.index for h in two[0]] == [h.index for h in hits[:2]] and len(two[1]) == 2
    # The saved tower is transformers' own class: it loads without this package's help.
    from transformers import CLIPVisionModelWithProjection

    tower = CLIPVisionModelWithProjection.from_pretrained(folder / IMAGE_ENCODER_DIR)
    for name, value in pretraining.image_model.state_dict().items():
        torch.testing.assert_close(tower.vision_model.state_dict()[name], value, atol=0, rtol=0)


def test_photo_encoder_from_a_clip_folder_equals_clips_image_features(tmp_path):
    from transformers import CLIPImageProcessor

    torch.manual_seed(4)
    clip = make_tiny_clip().eval()
    clip.save_pretrained(tmp_path / "clip")
    encoder = PhotoEncoder.from_pretrained(tmp_path / "clip")
    photo = write_photo(tmp_path / "p.png", size=(60, 40))  # not square: resized and centre-cropped
    pixels = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})(
        images=[Image.open(photo).convert("RGB")], return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        out = clip.get_image_features(pixel_values=pixels)
    expected = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)
    torch.testing.assert_close(torch.from_numpy(encoder.embed([photo])), expected, atol=1e-5, rtol=1e-5)


def test_a_model_without_image_weights_says_so_in_one_line(model_dir, shapes_dir, tmp_path, capsys):
    build = main(["embed", str(shapes_dir), "--model", str(model_dir), "-o", str(tmp_path / "idx")])
    assert build == 0
    capsys.readouterr()
    photo = write_photo(tmp_path / "photo.png")
    assert main(["search", "--image", str(photo), "--index", str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "CLIP2PointModel has no image tower" in err and "--image_model" in err and str(model_dir) in err
    assert main(["search", "--image", str(tmp_path / "none.jpg"), "--index", str(tmp_path / "idx")]) == 2
    assert "--image" in capsys.readouterr().err


def test_cli_photo_search_prints_hits_and_draws_the_photo(photo_model, shapes_dir, tmp_path, capsys):
    folder, pretraining = photo_model
    assert main(["embed", str(shapes_dir), "--model", str(folder), "-o", str(tmp_path / "idx")]) == 0
    photo = write_photo(tmp_path / "red.png")
    capsys.readouterr()
    args = ["search", "--image", str(photo), "--index", str(tmp_path / "idx"), "-k", "3"]
    assert main([*args, "--json", "-o", str(tmp_path / "hits.png")]) == 0
    hits = json.loads(capsys.readouterr().out.split("wrote")[0])
    index = ShapeIndex.load(tmp_path / "idx")
    scores = index.embeddings @ pretraining_image_embedding(pretraining, photo)
    assert [h["index"] for h in hits] == scores.topk(3).indices.tolist()
    with Image.open(tmp_path / "hits.png") as picture:
        cells = np.asarray(picture.convert("RGB")).astype(int)
    first = cells[24:248, 6:230]  # the query photo's cell: red
    assert ((first[..., 0] > 150) & (first[..., 1] < 100)).any()
    assert cells.shape[1] >= 4 * 224  # the photo and three hits


# ---------------------------------------------------------------------------------------------------- travel


def test_an_index_is_searched_from_anywhere_and_travels_with_its_shapes(
    model_dir, shapes_dir, tmp_path, capsys, monkeypatch
):
    work = tmp_path / "work"
    shutil.copytree(shapes_dir, work / "shapes")
    shutil.copytree(model_dir, work / "tiny-model")
    monkeypatch.chdir(work)
    assert main(["embed", "shapes", "--model", "tiny-model", "-o", "s.index"]) == 0
    config = json.loads((work / "s.index" / "index_config.json").read_text())
    assert config["model"] == str(work / "tiny-model")  # resolved at build time
    from datasets import load_from_disk

    assert sorted(load_from_disk(str(work / "s.index" / "data"))["path"])[0] == "../shapes/flat/s00.npy"

    monkeypatch.chdir(tmp_path)  # another folder: no Hub request, the same hits, every picture cell drawn
    capsys.readouterr()
    assert main(["search", "chair", "--index", "work/s.index", "-k", "3", "--json", "-o", "hits.png"]) == 0
    out = capsys.readouterr()
    hits = json.loads(out.out.split("wrote")[0])
    assert all(os.path.isfile(hit["path"]) for hit in hits) and out.err == ""
    with Image.open("hits.png") as picture:
        assert (np.asarray(picture.convert("L"))[24:248, 6:230] < 200).any()

    shutil.move(work, tmp_path / "moved")  # index, shapes and model moved together: the shapes are found
    index = ShapeIndex.load(tmp_path / "moved" / "s.index")
    assert sorted(index.dataset["path"]) == shape_files(tmp_path / "moved" / "shapes")
    assert main(["search", "chair", "--index", "moved/s.index"]) == 2  # the model folder is gone
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(work / "tiny-model") in err and "moved/s.index" in err, err
    assert main(["search", "chair", "--index", "moved/s.index", "--model", "moved/tiny-model"]) == 0
    capsys.readouterr()

    shutil.rmtree(tmp_path / "moved" / "shapes")  # the shapes gone: one line says so, cells name the path
    args = ["search", "chair", "--index", "moved/s.index", "--model", "moved/tiny-model", "-k", "2"]
    assert main([*args, "-o", "gone.png"]) == 0
    err = capsys.readouterr().err
    assert "2 of 2 hits' shape files are gone" in err and str(tmp_path / "moved" / "shapes") in err
    with Image.open("gone.png") as picture:
        cell = np.asarray(picture.convert("L"))[24:248, 6:230]
    assert (cell == 230).mean() > 0.8 and (cell < 100).any()  # a grey cell with text in it


def test_an_index_moved_alone_still_finds_its_shapes(model_dir, shapes_dir, tmp_path):
    built = ShapeIndex.build(shapes_dir, model_dir, tmp_path / "a" / "idx", progress=False)
    shutil.move(tmp_path / "a" / "idx", tmp_path / "idx")
    moved = ShapeIndex.load(tmp_path / "idx")
    assert list(moved.dataset["path"]) == list(built.dataset["path"])


# ---------------------------------------------------------------------------------------------------- up axes


def test_embed_and_search_with_a_signed_up_axis(model_dir, shapes_dir, tmp_path, capsys):
    assert (
        main(
            ["embed", str(shapes_dir), "--model", str(model_dir), "-o", str(tmp_path / "x"), "--up_axis", "x"]
        )
        == 0
    )
    index = ShapeIndex.load(tmp_path / "x")
    assert index.config["up_axis"] == "x"
    files = list(index.dataset["path"])
    expected = pipeline("point-cloud-feature-extraction", model=str(model_dir))(
        files, up_axis="x", return_tensors=True
    )
    torch.testing.assert_close(index.embeddings, torch.stack(list(expected)), atol=1e-5, rtol=1e-5)
    capsys.readouterr()
    like = files[0]
    args = ["search", "--like", like, "--index", str(tmp_path / "x"), "--json", "-k", "2", "--up_axis", "-x"]
    assert main(args) == 0
    hits = json.loads(capsys.readouterr().out)
    query = pipeline("point-cloud-feature-extraction", model=str(model_dir))(
        like, up_axis="-x", return_tensors=True
    )
    scores = index.embeddings @ query
    assert [h["index"] for h in hits] == scores.topk(2).indices.tolist()
    np.testing.assert_allclose([h["score"] for h in hits], scores.topk(2).values.numpy(), atol=1e-5)


# ---------------------------------------------------------------------------------------------------- the Hub


def test_push_to_hub_uploads_a_loadable_dataset_repo_and_from_hub_reads_it(tmp_path, monkeypatch):
    from datasets import load_dataset

    index, vectors = random_index(n=40, d=8)
    index.config.update(model="org/model", template="image of a {}")
    index.save(tmp_path / "idx")
    index = ShapeIndex.load(tmp_path / "idx")
    calls = capture_hub_uploads(monkeypatch, tmp_path / "uploaded")
    assert index.push_to_hub("org/shapes", private=True) == "commit"
    assert [c[:2] for c in calls] == [("create_repo", "org/shapes"), ("upload_folder", "org/shapes")]
    assert (
        calls[0][2]["repo_type"] == calls[1][2]["repo_type"] == "dataset" and calls[0][2]["private"] is True
    )
    uploaded = tmp_path / "uploaded"
    assert sorted(p.relative_to(uploaded).as_posix() for p in uploaded.rglob("*") if p.is_file()) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "index_config.json",
    ]
    config = json.loads((uploaded / "index_config.json").read_text())
    assert config["model"] == "org/model" and "saved_in" not in config
    rows = load_dataset(str(uploaded), split="train", cache_dir=str(tmp_path / "cache"))
    assert rows.column_names == ["name", "path", "embedding"] and rows[0]["name"] == "shape0"
    assert rows[0]["path"] == os.path.relpath("/x/shape0.ply", tmp_path / "idx")  # no local folder published

    shared = ShapeIndex.from_hub(uploaded, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(shared.embeddings, index.embeddings, atol=0, rtol=0)
    assert list(shared.dataset["name"]) == list(index.dataset["name"])
    assert shared.config["template"] == "image of a {}" and shared.model_location() == "org/model"
    queries = np.random.default_rng(1).normal(size=(3, 8))
    np.testing.assert_array_equal(shared.search_rows(queries, 5)[1], brute_force(vectors, queries, 5)[1])
