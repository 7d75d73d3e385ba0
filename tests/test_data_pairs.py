"""ShapeNet-55-style image-depth pairs (Point-BERT clouds + 10-view renderings), the pre-training
pair transform, and ``build_render_pairs`` writing that layout from meshes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clip2point_hf.data import (
    SHAPENET55_SYNSETS,
    DatasetFormatError,
    KeyedDataset,
    MissingFilesError,
    PretrainingPairTransform,
    build_render_pairs,
    dataset_metadata,
    load_shapenet_pairs,
)
from clip2point_hf.prompts import prompt_names
from clip2point_hf.rendering_clip2point import VIEW_PRESETS

try:
    from test_data_helpers import CUBE_TRIS, CUBE_V, make_mesh_folder, make_pairs_release, write_off
except ImportError:  # tests/ imported as a package
    from .test_data_helpers import CUBE_TRIS, CUBE_V, make_mesh_folder, make_pairs_release, write_off

IDS = [
    "02691156-1a04e3eab45ca15dd86060f189eb133",
    "02691156-1a6ad7a24bb89733f412783097373bdc",
    "03001627-1006be65e7bc937e9141f9b58470d646",
    "04379243-1011e1c9812b84d2a9ed7bb5b55809f8",
    "04379243-10139b3e4b6dff1f8b3a33c7d3bc5d18",
    "02958343-100715345ee54d7ae38b52b4ee9d36a3",
]


@pytest.fixture(autouse=True)
def _quiet():
    import datasets

    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def test_shapenet_pairs_layout(tmp_path):
    make_pairs_release(tmp_path / "ShapeNet55", tmp_path / "renders" / "rendering", IDS, points=64)
    ds = load_shapenet_pairs(tmp_path / "ShapeNet55", tmp_path / "renders", cache_dir=tmp_path / "c")
    assert ds["train"].num_rows == 4 and ds["test"].num_rows == 2
    feats = ds["train"].features
    assert feats["points"].shape == (64, 3)
    assert feats["label"].names == list(SHAPENET55_SYNSETS.values()) and len(feats["label"].names) == 55
    row = ds["train"][0]
    assert row["synset"] == "02691156" and row["name"] == IDS[0]
    assert feats["label"].int2str(row["label"]) == "airplane"
    assert len(row["images"]) == 10 and row["images"][3].size == (32, 32)
    assert prompt_names(ds)[1] == "trash bin"
    meta = dataset_metadata(ds)
    assert meta["up_axis"] == "y" and meta["num_views"] == 10


def _pair_loader(ds, num_points, image_size, seed=0, **kwargs):
    transform = PretrainingPairTransform(VIEW_PRESETS["reference10"], image_size, num_points, **kwargs)
    return KeyedDataset(ds, transform, seed, "pairs")


def test_pair_transform(tmp_path):
    make_pairs_release(tmp_path / "sn", tmp_path / "r", IDS, points=64, size=32, rgba=True)
    ds = load_shapenet_pairs(tmp_path / "sn", tmp_path / "r", cache_dir=tmp_path / "c")["train"]
    pairs = _pair_loader(ds, 16, 24, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))
    b = pairs.__getitems__([0, 1, 2, 3])
    assert b["points"].shape == (4, 16, 3) and b["points"].dtype == torch.float32
    assert (
        b["image"].shape == (4, 3, 24, 24) and float(b["image"].min()) >= 0 and float(b["image"].max()) <= 1
    )
    assert b["view"].shape == (4,) and b["label"].dtype == torch.long
    reference10 = torch.tensor(VIEW_PRESETS["reference10"])[:, :2]
    assert torch.equal(b["view_angles"], reference10[b["view"]])
    assert ((b["distances"] >= 0.9) & (b["distances"] < 1.1)).all()
    stored = ds.with_format("numpy")[:4]["points"]
    for k in range(4):  # distinct points of the stored cloud
        same = (b["points"][k][:, None, :] == torch.from_numpy(stored[k])[None]).all(dim=-1)
        assert same.any(dim=1).all() and len(set(same.float().argmax(dim=1).tolist())) == 16
    # RGBA renderings are composited on white: alpha 0 everywhere -> white
    assert torch.allclose(b["image"], torch.ones_like(b["image"]), atol=0.02)
    # keyed: the same seed gives the same draws; another epoch, other draws
    x1, x2 = pairs.__getitems__([(0, 0), (0, 1)]), pairs.__getitems__([(1, 0), (1, 1)])
    y1 = _pair_loader(ds, 16, 224).__getitems__([(0, 0), (0, 1)])
    assert torch.equal(x1["points"], y1["points"]) and torch.equal(x1["view"], y1["view"])
    assert not torch.equal(x1["points"], x2["points"])
    # a full epoch through the loader
    batches = list(_pair_loader(ds, 16, 224).loader(2, shuffle=True, drop_last=False))
    assert len(batches) == 2 and batches[0]["image"].shape == (2, 3, 224, 224)


def test_pair_transform_clip_normalised(tmp_path):
    make_pairs_release(tmp_path / "sn", tmp_path / "r", IDS, points=64, size=32)
    ds = load_shapenet_pairs(tmp_path / "sn", tmp_path / "r", cache_dir=tmp_path / "c")["test"]
    b = _pair_loader(ds, None, 32)[0]
    v = int(b["view"][0])
    # the synthetic view v is the colour (10 v, 100, 200)
    want = (
        torch.tensor([10 * v, 100, 200]) / 255 - torch.tensor([0.48145466, 0.4578275, 0.40821073])
    ) / torch.tensor([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(b["image"][0, :, 5, 5], want.float(), atol=1e-4, rtol=0)
    assert b["points"].shape == (1, 64, 3)


def test_shapenet_pairs_missing_views_and_clouds(tmp_path):
    make_pairs_release(tmp_path / "sn", tmp_path / "r", IDS, points=64)
    (tmp_path / "r" / "02691156_1a04e3eab45ca15dd86060f189eb133" / "7.png").unlink()
    (tmp_path / "sn" / "shapenet_pc" / f"{IDS[2]}.npy").unlink()
    with pytest.raises(MissingFilesError) as info:
        load_shapenet_pairs(tmp_path / "sn", tmp_path / "r", cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert "train.txt" in msg and "2 of 44" in msg and "7.png" in msg and f"{IDS[2]}.npy" in msg
    with pytest.warns(UserWarning, match="skipping 2"):
        ds = load_shapenet_pairs(tmp_path / "sn", tmp_path / "r", on_missing="skip", cache_dir=tmp_path / "c")
    assert ds["train"].num_rows == 2 and ds["test"].num_rows == 2


def test_shapenet_pairs_bad_input(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_shapenet_pairs(tmp_path / "nope", tmp_path)
    make_pairs_release(tmp_path / "sn", tmp_path / "r", IDS, points=64)
    (tmp_path / "sn" / "shapenet_pc" / f"{IDS[0]}.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetFormatError) as info:
        load_shapenet_pairs(tmp_path / "sn", tmp_path / "r", cache_dir=tmp_path / "c")
    assert f"{IDS[0]}.npy" in str(info.value)
    assert list((tmp_path / "c").glob("*/*")) == []
    np.save(tmp_path / "sn" / "shapenet_pc" / f"{IDS[0]}.npy", np.full((64, 3), np.nan, np.float32))
    with pytest.raises(DatasetFormatError, match="NaN"):
        load_shapenet_pairs(tmp_path / "sn", tmp_path / "r", cache_dir=tmp_path / "c")
    (tmp_path / "sn" / "ShapeNet-55" / "train.txt").unlink()
    with pytest.raises(DatasetFormatError, match="no split lists found"):
        load_shapenet_pairs(tmp_path / "sn", tmp_path / "r")


def test_build_render_pairs_roundtrip(tmp_path):
    root = make_mesh_folder(tmp_path / "meshes", per_split={"train": 2, "test": 1})
    out = build_render_pairs(
        root, tmp_path / "out" / "pairs", num_points=256, render_points=2048, up_axis="z"
    )
    rendered = sorted(p.name for p in (out / "rendering").iterdir())
    # m0 exists in train and test: the clash is resolved with the split name
    assert rendered == [
        "box_m1",
        "box_test_m0",
        "box_train_m0",
        "pyramid_m1",
        "pyramid_test_m0",
        "pyramid_train_m0",
    ]
    from PIL import Image

    img = np.asarray(Image.open(out / "rendering" / "box_m1" / "0.png"))
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    assert (img[0, 0] == 255).all()  # white background
    fg = (img < 250).any(axis=-1)
    assert 0.02 < fg.mean() < 0.9  # the object is there, shaded in grey levels
    diag = np.asarray(Image.open(out / "rendering" / "box_m1" / "4.png"))[..., 0]
    assert len(np.unique(diag[diag < 250])) >= 2  # a diagonal view shows faces at different angles
    assert sorted((out / "rendering" / "box_m1").iterdir())[0].name == "0.png"
    assert len(list((out / "rendering" / "box_m1").iterdir())) == 10
    cloud = np.load(out / "shapenet_pc" / "box-m1.npy")
    assert cloud.shape == (256, 3) and cloud.dtype == np.float32
    assert (out / "ShapeNet-55" / "train.txt").read_text().split() == [
        "box-train_m0.npy",
        "box-m1.npy",
        "pyramid-train_m0.npy",
        "pyramid-m1.npy",
    ]
    meta = json.loads((out / "clip2point_pairs.json").read_text())
    assert (
        meta["class_names"] == ["box", "pyramid"]
        and meta["up_axis"] == "y"
        and meta["original_up_axis"] == "z"
    )
    ds = load_shapenet_pairs(out, out, cache_dir=tmp_path / "c")
    assert ds["train"].num_rows == 4 and ds["test"].num_rows == 2
    assert ds["train"].features["label"].names == ["box", "pyramid"]
    assert ds["test"][1]["synset"] == "pyramid" and ds["test"][1]["label"] == 1
    # deterministic: a second build gives the same clouds and images
    out2 = build_render_pairs(root, tmp_path / "out2", num_points=256, render_points=2048, up_axis="z")
    np.testing.assert_array_equal(cloud, np.load(out2 / "shapenet_pc" / "box-m1.npy"))
    assert (out / "rendering" / "pyramid_test_m0" / "9.png").read_bytes() == (
        out2 / "rendering" / "pyramid_test_m0" / "9.png"
    ).read_bytes()


def test_build_render_pairs_bad_mesh_writes_nothing(tmp_path):
    root = make_mesh_folder(tmp_path / "meshes", per_split={"train": 2, "test": 1})
    (root / "box" / "train" / "zz.off").write_text("OFF\n3 1 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n")
    with pytest.raises(DatasetFormatError, match=r"zz\.off: mesh has zero surface area"):
        build_render_pairs(root, tmp_path / "out", render_points=512, num_points=256)
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".*")) == []
    with pytest.warns(UserWarning, match="skipped 1 meshes"):
        out = build_render_pairs(root, tmp_path / "out", render_points=512, num_points=256, on_error="skip")
    assert "box-zz.npy" not in (out / "ShapeNet-55" / "train.txt").read_text()
    with pytest.raises(DatasetFormatError, match="output folder exists"):
        build_render_pairs(root, out)
    write_off(root / "box" / "train" / "zz.off", CUBE_V, CUBE_TRIS)
    again = build_render_pairs(root, out, render_points=512, num_points=256, overwrite=True)
    assert "box-zz.npy" in (again / "ShapeNet-55" / "train.txt").read_text()


def test_pairs_ready_for_the_hub(tmp_path):
    """``push_to_hub`` writes parquet with the image files embedded: do both offline."""
    from datasets import Dataset
    from datasets.table import embed_table_storage

    make_pairs_release(tmp_path / "sn", tmp_path / "r", IDS, points=64)
    ds = load_shapenet_pairs(tmp_path / "sn", tmp_path / "r", cache_dir=tmp_path / "c")["train"]
    embedded = embed_table_storage(ds.data.table)
    first = embedded.column("images")[0].as_py()
    assert len(first) == 10 and first[0]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    ds.to_parquet(tmp_path / "train.parquet")
    back = Dataset.from_parquet(str(tmp_path / "train.parquet"))
    assert back.features["label"].names == ds.features["label"].names
    np.testing.assert_array_equal(
        back.with_format("numpy")[:]["points"], ds.with_format("numpy")[:]["points"]
    )
