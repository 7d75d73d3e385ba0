"""Loaders on small files written by the tests: mesh folders, ModelNet (OFF, normal_resampled, h5),
ScanObjectNN; determinism, caching, atomicity and bad input."""

from __future__ import annotations

import os
import warnings

import h5py
import numpy as np
import pytest
import torch

import clip2point_hf.data.mesh_folder as mesh_folder_mod
from clip2point_hf.data import (
    MODELNET10_CLASSES,
    MODELNET40_CLASSES,
    SCANOBJECTNN_CLASSES,
    DatasetFormatError,
    MissingFilesError,
    dataset_metadata,
    detect_modelnet_format,
    load_mesh_folder,
    load_modelnet,
    load_scanobjectnn,
    read_mesh,
)
from clip2point_hf.prompts import prompt_names

try:
    import test_data_helpers as helpers
except ImportError:  # tests/ imported as a package
    from . import test_data_helpers as helpers


@pytest.fixture(autouse=True)
def _quiet():
    import datasets

    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def _points(ds):
    return ds.with_format("numpy")[:]["points"]


def _cache_entries(cache):
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.glob("*/*"))


# ------------------------------------------------------------------------------------- mesh folders


def test_mesh_folder_all_formats(tmp_path):
    root = helpers.make_mesh_folder(tmp_path / "meshes")
    ds = load_mesh_folder(root, num_points=64, seed=0, cache_dir=tmp_path / "cache")
    assert sorted(ds) == ["test", "train"]
    assert ds["train"].num_rows == 8 and ds["test"].num_rows == 4
    feats = ds["train"].features
    assert type(feats["points"]).__name__ == "Array2D" and feats["points"].shape == (64, 3)
    assert feats["points"].dtype == "float32"
    assert feats["label"].names == ["box", "pyramid"]
    row = ds["train"].with_format("numpy")[0]
    assert row["points"].dtype == np.float32 and row["points"].shape == (64, 3)
    assert row["path"] == "box/train/m0.obj" and row["name"] == "m0"
    pts = _points(ds["train"])
    norms = np.linalg.norm(pts, axis=-1)
    np.testing.assert_allclose(norms.max(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(pts.mean(axis=1), 0.0, atol=1e-5)
    exts = {os.path.splitext(p)[1] for p in list(ds["train"]["path"]) + list(ds["test"]["path"])}
    assert exts == {".obj", ".off", ".ply", ".stl"}
    meta = dataset_metadata(ds)
    assert meta["up_axis"] == "y" and meta["num_points"] == 64 and meta["seed"] == 0
    assert dataset_metadata(ds["test"])["class_names"] == ["box", "pyramid"]


def test_mesh_folder_surface_points_lie_on_the_mesh(tmp_path):
    root = tmp_path / "m"
    helpers.write_off(root / "cube" / "train" / "c.off", helpers.CUBE_V * 2.0, helpers.CUBE_TRIS)
    ds = load_mesh_folder(root, num_points=500, normalize=False, with_normals=True, cache_dir=tmp_path / "c")
    pts = _points(ds["train"])[0]
    on_face = (np.isclose(pts, 0, atol=1e-5) | np.isclose(pts, 2, atol=1e-5)).any(axis=1)
    assert on_face.all()
    normals = ds["train"].with_format("numpy")[0]["normals"]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)


def test_determinism_across_builds_and_num_proc(tmp_path):
    root = helpers.make_mesh_folder(tmp_path / "meshes", per_split={"train": 6, "test": 3})
    a = load_mesh_folder(root, num_points=32, seed=7, cache_dir=tmp_path / "c1", num_proc=1)
    b = load_mesh_folder(root, num_points=32, seed=7, cache_dir=tmp_path / "c2", num_proc=2)
    c = load_mesh_folder(root, num_points=32, seed=7, cache_dir=tmp_path / "c3", num_proc=1)
    d = load_mesh_folder(root, num_points=32, seed=8, cache_dir=tmp_path / "c1", num_proc=1)
    for split in ("train", "test"):
        np.testing.assert_array_equal(_points(a[split]), _points(b[split]))
        np.testing.assert_array_equal(_points(a[split]), _points(c[split]))
        assert list(a[split]["path"]) == list(b[split]["path"])
        assert not np.allclose(_points(a[split]), _points(d[split]))


def test_cache_hit_does_not_read_again_and_changes_rebuild(tmp_path, monkeypatch):
    root = helpers.make_mesh_folder(tmp_path / "meshes")
    cache = tmp_path / "cache"
    first = load_mesh_folder(root, num_points=16, cache_dir=cache, num_proc=1)

    def boom(path):
        raise AssertionError(f"re-read {path}")

    monkeypatch.setattr(mesh_folder_mod, "read_mesh", boom)
    again = load_mesh_folder(root, num_points=16, cache_dir=cache, num_proc=1)
    np.testing.assert_array_equal(_points(first["train"]), _points(again["train"]))
    assert len(_cache_entries(cache)) == 1
    # a changed argument or a changed file is a new cache entry (and reads again)
    with pytest.raises(AssertionError, match="re-read"):
        load_mesh_folder(root, num_points=17, cache_dir=cache, num_proc=1)
    monkeypatch.setattr(mesh_folder_mod, "read_mesh", read_mesh)
    v, f = helpers.tetra(3.0)
    helpers.write_off(root / "pyramid" / "train" / "m1.off", v, f)
    changed = load_mesh_folder(root, num_points=16, cache_dir=cache, num_proc=1)
    assert changed["train"].num_rows == 9
    assert len(_cache_entries(cache)) == 2  # the old files and the new ones; the failed build left nothing


def test_failed_build_leaves_no_cache(tmp_path, monkeypatch):
    root = helpers.make_mesh_folder(tmp_path / "meshes")
    cache = tmp_path / "cache"
    calls = []

    def flaky(path):
        calls.append(path)
        if len(calls) == 5:
            raise DatasetFormatError(path, "simulated crash halfway")
        return read_mesh(path)

    monkeypatch.setattr(mesh_folder_mod, "read_mesh", flaky)
    with pytest.raises(DatasetFormatError, match="simulated crash halfway"):
        load_mesh_folder(root, num_points=16, cache_dir=cache, num_proc=1)
    assert len(calls) == 5
    leftovers = (
        [p.name for p in (cache / "mesh_folder").iterdir()] if (cache / "mesh_folder").exists() else []
    )
    assert leftovers == []
    monkeypatch.setattr(mesh_folder_mod, "read_mesh", read_mesh)
    ok = load_mesh_folder(root, num_points=16, cache_dir=cache, num_proc=1)
    assert ok["train"].num_rows == 8


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"OFF\n8 12 0\n0 0 0\n", "truncated"),
        (b"OFF\n3 1 0\n0 0 0\n1 nan 0\n0 1 0\n3 0 1 2\n", "NaN"),
        (b"OFF\n3 1 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n", "zero surface area"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n", "out of range"),
    ],
)
def test_bad_mesh_names_file_and_writes_nothing(tmp_path, content, problem):
    root = helpers.make_mesh_folder(tmp_path / "meshes")
    bad = root / "box" / "test" / "zz_bad.off"
    bad.write_bytes(content)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetFormatError) as info:
        load_mesh_folder(root, num_points=16, cache_dir=cache, num_proc=2)
    assert str(bad) in str(info.value) and problem in str(info.value)
    assert list((cache / "mesh_folder").iterdir()) == []


def test_missing_root_and_bad_arguments(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist") as info:
        load_mesh_folder(tmp_path / "nowhere", cache_dir=tmp_path / "c")
    assert str(tmp_path / "nowhere") in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no class folders"):
        load_mesh_folder(tmp_path / "empty", cache_dir=tmp_path / "c")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(DatasetFormatError, match="no mesh files"):
        load_mesh_folder(tmp_path / "empty", cache_dir=tmp_path / "c")
    root = helpers.make_mesh_folder(tmp_path / "m")
    with pytest.raises(ValueError, match="num_points"):
        load_mesh_folder(root, num_points=0)
    with pytest.raises(ValueError, match="up_axis"):
        load_mesh_folder(root, up_axis="w")


# ---------------------------------------------------------------------------------------- ModelNet


def _modelnet_off(root, classes, glued=True):
    for k, cls in enumerate(classes):
        for split, n in (("train", 2), ("test", 1)):
            for i in range(n):
                v, f = (helpers.CUBE_V * (1 + k), helpers.CUBE_TRIS) if i % 2 == 0 else helpers.tetra(1 + k)
                helpers.write_off(root / cls / split / f"{cls}_{i + 1:04d}.off", v, f, glued=glued)
    # macOS junk of the real zip files
    (root / "__MACOSX" / classes[0]).mkdir(parents=True)
    (root / "__MACOSX" / classes[0] / "._x.off").write_bytes(b"\x00\x05junk")
    (root / classes[0] / "train" / "._chair_0001.off").write_bytes(b"\x00\x05junk")
    (root / ".DS_Store").write_bytes(b"junk")
    return root


def test_modelnet_off_glued_headers(tmp_path):
    classes = ["bed", "chair", "desk", "monitor", "sofa", "toilet"]  # a partial ModelNet10
    root = _modelnet_off(tmp_path / "extracted" / "ModelNet10", classes)
    assert (root / "bed" / "train" / "bed_0001.off").read_text().startswith("OFF8 12 0")
    assert detect_modelnet_format(root) == "off"
    ds = load_modelnet(root, num_points=32, cache_dir=tmp_path / "c")
    assert ds["train"].num_rows == 12 and ds["test"].num_rows == 6
    assert ds["train"].features["label"].names == list(MODELNET10_CLASSES)
    row = ds["train"][0]
    assert ds["train"].features["label"].int2str(row["label"]) == "bed" and row["name"] == "bed_0001"
    meta = dataset_metadata(ds)
    assert meta["up_axis"] == "z" and meta["dataset"] == "ModelNet10" and meta["format"] == "off"
    # the folder a zip was extracted into (holding ModelNet10/ and __MACOSX/) works as well
    (tmp_path / "extracted" / "__MACOSX").mkdir()
    parent = load_modelnet(tmp_path / "extracted", num_points=32, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(_points(parent["test"]), _points(ds["test"]))


def test_modelnet_normal_resampled_split_lists_and_missing(tmp_path):
    root = helpers.make_normal_resampled(tmp_path / "mn", list_extra=("chair_0099", "night_stand_0042"))
    assert detect_modelnet_format(root) == "normal_resampled"
    with pytest.raises(MissingFilesError) as info:
        load_modelnet(root, num_points=16, cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert (
        "modelnet40_train.txt" in msg
        and "2 of 6" in msg
        and "chair/chair_0099.txt" in msg
        and "on_missing='skip'" in msg
    )
    assert info.value.missing == ["chair/chair_0099.txt", "night_stand/night_stand_0042.txt"]
    assert list((tmp_path / "c").glob("*/*")) == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_modelnet(root, num_points=16, on_missing="skip", normalize=False, cache_dir=tmp_path / "c")
    assert any("skipping 2 of 6" in str(w.message) for w in caught)
    assert ds["train"].num_rows == 4 and ds["test"].num_rows == 2
    assert ds["train"].features["label"].names == list(MODELNET40_CLASSES)
    assert prompt_names(ds)[MODELNET40_CLASSES.index("night_stand")] == "night stand"
    meta = dataset_metadata(ds)
    assert meta["up_axis"] == "y" and meta["missing_skipped"] == {"train": 2, "test": 0}
    # sampling="first" keeps the first lines of the file
    row = ds["train"].with_format("numpy")[0]
    lines = (root / row["path"]).read_text().splitlines()[:16]
    want = np.array([[float(x) for x in ln.split(",")[:3]] for ln in lines], dtype=np.float32)
    np.testing.assert_allclose(row["points"], want, atol=1e-6)
    with pytest.warns(UserWarning, match="skipping 2 of 6"):
        fps = load_modelnet(
            root,
            num_points=16,
            on_missing="skip",
            sampling="fps",
            with_normals=True,
            cache_dir=tmp_path / "c",
        )
    assert "normals" in fps["train"].features
    assert not np.allclose(_points(fps["train"]), _points(ds["train"]))


def test_modelnet_normal_resampled_too_few_points(tmp_path):
    root = helpers.make_normal_resampled(tmp_path / "mn", points=8)
    with pytest.raises(DatasetFormatError, match="has only 8 points, 16 needed"):
        load_modelnet(root, num_points=16, cache_dir=tmp_path / "c")


def test_modelnet_h5(tmp_path):
    root = helpers.make_modelnet_h5(tmp_path / "modelnet40_ply_hdf5_2048")
    assert detect_modelnet_format(root) == "hdf5"
    assert detect_modelnet_format(tmp_path) == "hdf5"  # the parent folder works too
    first = load_modelnet(root, num_points=16, normalize=False, cache_dir=tmp_path / "c")
    assert first["train"].num_rows == 8 and first["test"].num_rows == 4
    assert dataset_metadata(first)["up_axis"] == "y"
    with h5py.File(root / "ply_data_train1.h5") as f:
        raw = f["data"][:]
        labels = f["label"][:].reshape(-1)
    row = first["train"].with_format("numpy")[5]  # the first cloud of the second file
    np.testing.assert_allclose(row["points"], raw[0, :16])
    assert (
        row["label"] == labels[0]
        and row["name"] == "chair_train1_0000"
        and row["path"] == "ply_data_train1.h5:0"
    )
    fps = load_modelnet(root, num_points=16, sampling="fps", normalize=False, cache_dir=tmp_path / "c")
    from clip2point_hf.points_clip2point import farthest_point_sample

    idx = farthest_point_sample(torch.from_numpy(raw[0]), 16, start_index=0).numpy()
    np.testing.assert_allclose(fps["train"].with_format("numpy")[5]["points"], raw[0][idx])


def test_modelnet_h5_bad_keys_and_missing_files(tmp_path):
    root = helpers.make_modelnet_h5(tmp_path / "h5")
    with h5py.File(root / "ply_data_test0.h5", "w") as f:
        f["points"] = np.zeros((2, 32, 3), np.float32)
    with pytest.raises(DatasetFormatError) as info:
        load_modelnet(root, num_points=16, cache_dir=tmp_path / "c")
    assert "ply_data_test0.h5" in str(info.value) and "lacks key(s) ['data', 'label']" in str(info.value)
    (root / "ply_data_test0.h5").unlink()
    with pytest.raises(MissingFilesError, match=r"ply_data_test0\.h5"):
        load_modelnet(root, num_points=16, cache_dir=tmp_path / "c")
    (root / "ply_data_test0.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(DatasetFormatError, match="not a readable HDF5 file"):
        load_modelnet(root, num_points=16, cache_dir=tmp_path / "c")


def test_modelnet_not_a_release(tmp_path):
    (tmp_path / "x" / "a").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match="not a ModelNet release"):
        load_modelnet(tmp_path / "x")
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_modelnet(tmp_path / "y")


# ------------------------------------------------------------------------------------- ScanObjectNN


@pytest.mark.parametrize(
    ("variant", "train_file"),
    [
        ("OBJ_BG", "main_split/training_objectdataset.h5"),
        ("obj_only", "main_split_nobg/training_objectdataset.h5"),
        ("PB_T50_RS", "main_split/training_objectdataset_augmentedrot_scale75.h5"),
        ("hardest", "main_split/training_objectdataset_augmentedrot_scale75.h5"),
    ],
)
def test_scanobjectnn_variants(tmp_path, variant, train_file):
    root = helpers.make_scanobjectnn(tmp_path / "h5_files")
    ds = load_scanobjectnn(root, variant=variant, num_points=16, normalize=False, cache_dir=tmp_path / "c")
    assert ds["train"].num_rows == 6 and ds["test"].num_rows == 4
    assert ds["train"].features["label"].names == list(SCANOBJECTNN_CLASSES)
    row = ds["train"].with_format("numpy")[2]
    assert row["path"] == f"{train_file}:2"
    with h5py.File(root / train_file) as f:
        raw = f["data"][2]
        label = int(f["label"][2])
    from clip2point_hf.points_clip2point import farthest_point_sample

    idx = farthest_point_sample(torch.from_numpy(raw), 16, start_index=0).numpy()
    np.testing.assert_allclose(row["points"], raw[idx])
    assert row["label"] == label
    assert dataset_metadata(ds)["up_axis"] == "y"


def test_scanobjectnn_bad_input(tmp_path):
    root = helpers.make_scanobjectnn(tmp_path / "h5_files")
    with pytest.raises(DatasetFormatError, match="unknown ScanObjectNN variant 'PB_T25'"):
        load_scanobjectnn(root, variant="PB_T25")
    (root / "main_split_nobg" / "test_objectdataset.h5").unlink()
    with pytest.raises(DatasetFormatError, match="OBJ_ONLY test file not found"):
        load_scanobjectnn(root, variant="OBJ_ONLY", cache_dir=tmp_path / "c")
    bad = root / "main_split" / "test_objectdataset.h5"
    with h5py.File(bad, "w") as f:
        f["data"] = np.zeros((2, 40, 3), np.float32)
    with pytest.raises(DatasetFormatError) as info:
        load_scanobjectnn(root, variant="OBJ_BG", num_points=16, cache_dir=tmp_path / "c")
    assert str(bad) in str(info.value) and "lacks key(s) ['label']" in str(info.value)
    with h5py.File(bad, "w") as f:
        f["data"] = np.full((2, 40, 3), np.nan, np.float32)
        f["label"] = np.zeros(2, np.int64)
    with pytest.raises(DatasetFormatError, match="NaN"):
        load_scanobjectnn(root, variant="OBJ_BG", num_points=16, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c" / "scanobjectnn").iterdir()) == []
    with pytest.raises(DatasetFormatError, match="clouds have 40 points, 1024 requested"):
        load_scanobjectnn(root, variant="PB_T50_RS", cache_dir=tmp_path / "c")
