"""The loaders on the real data in ``<repo>/../shared/data`` (SHREC'16 and a partial ModelNet40
``normal_resampled`` download); skipped with a reason where that folder is absent."""

from __future__ import annotations

import numpy as np
import pytest

from clip2point_hf.data import (
    MODELNET40_CLASSES,
    MissingFilesError,
    build_render_pairs,
    dataset_metadata,
    load_mesh_folder,
    load_modelnet,
    load_shapenet_pairs,
)
from clip2point_hf.prompts import prompt_names

try:
    from test_data_helpers import SHARED_DATA
except ImportError:  # tests/ imported as a package
    from .test_data_helpers import SHARED_DATA

SHREC = SHARED_DATA / "shrec_16"
MN40 = SHARED_DATA / "modelnet40_normal_resampled_subset"
SHREC_CLASSES = (
    "alien", "ants", "armadillo", "bird1", "bird2", "camel", "cat", "centaur", "dino_ske", "dinosaur",
    "dog1", "dog2", "flamingo", "glasses", "gorilla", "hand", "horse", "lamp", "laptop", "man",
    "myScissor", "octopus", "pliers", "rabbit", "santa", "shark", "snake", "spiders", "two_balls", "woman",
)  # fmt: skip

needs_shrec = pytest.mark.skipif(not SHREC.is_dir(), reason=f"real data not available: {SHREC} is absent")
needs_mn40 = pytest.mark.skipif(not MN40.is_dir(), reason=f"real data not available: {MN40} is absent")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("real_data_cache")


@pytest.fixture(scope="session")
def shrec(data_cache):
    import datasets

    datasets.disable_progress_bars()
    try:
        return load_mesh_folder(SHREC, num_points=1024, seed=0, cache_dir=data_cache, num_proc=2)
    finally:
        datasets.enable_progress_bars()


@needs_shrec
def test_shrec16_splits_and_classes(shrec, data_cache, monkeypatch):
    assert shrec["train"].num_rows == 480 and shrec["test"].num_rows == 120
    names = shrec["train"].features["label"].names
    assert len(names) == 30 and sorted(names) == sorted(SHREC_CLASSES)
    counts = np.bincount(shrec["train"].with_format("numpy")[:]["label"], minlength=30)
    assert (counts == 16).all()  # 16 train / 4 test meshes per class
    assert (np.bincount(shrec["test"].with_format("numpy")[:]["label"], minlength=30) == 4).all()
    pts = shrec["test"].with_format("numpy")[:]["points"]
    assert pts.shape == (120, 1024, 3) and pts.dtype == np.float32 and np.isfinite(pts).all()
    np.testing.assert_allclose(np.linalg.norm(pts, axis=-1).max(axis=1), 1.0, atol=1e-5)
    meta = dataset_metadata(shrec)
    assert meta["up_axis"] == "y" and meta["num_examples"] == {"train": 480, "test": 120}
    assert "dinosaur skeleton" in prompt_names(shrec)
    # the second call is a cache hit: no mesh is read
    import clip2point_hf.data.mesh_folder as mesh_folder

    def no_read(path, *args, **kwargs):
        raise AssertionError(f"a cache hit read {path}")

    monkeypatch.setattr(mesh_folder, "read_mesh", no_read)
    again = load_mesh_folder(SHREC, num_points=1024, seed=0, cache_dir=data_cache)
    np.testing.assert_array_equal(again["test"].with_format("numpy")[:]["points"], pts)


@needs_shrec
def test_shrec16_sampling_is_reproducible_per_file(shrec, tmp_path):
    """A cloud depends only on (file, seed): a folder holding one class gives the same cloud."""
    import datasets

    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "alien").symlink_to(SHREC / "alien", target_is_directory=True)
    datasets.disable_progress_bars()
    one = load_mesh_folder(tmp_path / "one", num_points=1024, seed=0, cache_dir=tmp_path / "c", num_proc=1)
    datasets.enable_progress_bars()
    mine = {r["path"]: r["points"] for r in one["test"].with_format("numpy")}
    full = {
        r["path"]: r["points"] for r in shrec["test"].with_format("numpy") if r["path"].startswith("alien/")
    }
    assert mine.keys() == full.keys() and len(mine) == 4
    for k in mine:
        np.testing.assert_array_equal(mine[k], full[k])


@needs_mn40
def test_modelnet40_subset_reports_missing_then_skips(tmp_path):
    with pytest.raises(MissingFilesError) as info:
        load_modelnet(MN40, num_points=1024, cache_dir=tmp_path)
    err = info.value
    assert (
        "modelnet40_test.txt" in str(err)
        and "1 of 1" in str(err)
        and "airplane/airplane_0627.txt" in str(err)
    )
    assert list(tmp_path.glob("*/*")) == []
    with pytest.warns(UserWarning, match="skipping 1 of 1"):
        ds = load_modelnet(MN40, num_points=1024, on_missing="skip", cache_dir=tmp_path)
    assert ds["train"].num_rows == 113 and ds["test"].num_rows == 0
    assert ds["train"].features["label"].names == list(MODELNET40_CLASSES)
    labels = set(ds["train"].with_format("numpy")[:]["label"].tolist())
    assert MODELNET40_CLASSES.index("door") not in labels
    meta = dataset_metadata(ds)
    assert (
        meta["format"] == "normal_resampled"
        and meta["up_axis"] == "y"
        and meta["missing_skipped"] == {"train": 0, "test": 1}
    )
    pts = ds["train"].with_format("numpy")[:]["points"]
    assert pts.shape == (113, 1024, 3) and np.isfinite(pts).all()
    # the files keep 2048 points: 4096 cannot be had, and the error says which file
    with (
        pytest.raises(Exception, match=r"airplane_0126\.txt: has only 2048 points, 4096 needed"),
        pytest.warns(UserWarning),
    ):
        load_modelnet(MN40, num_points=4096, on_missing="skip", cache_dir=tmp_path, num_proc=1)


@needs_shrec
def test_shrec16_render_pairs_subset(tmp_path):
    """Two SHREC'16 classes through build_render_pairs, read back with load_shapenet_pairs."""
    import datasets

    root = tmp_path / "shrec_two"
    root.mkdir()
    for cls in ("hand", "two_balls"):
        (root / cls).symlink_to(SHREC / cls, target_is_directory=True)
    out = build_render_pairs(root, tmp_path / "pairs", num_points=2048, render_points=8192, batch_size=20)
    datasets.disable_progress_bars()
    pairs = load_shapenet_pairs(out, out, cache_dir=tmp_path / "c")
    datasets.enable_progress_bars()
    assert pairs["train"].num_rows == 32 and pairs["test"].num_rows == 8
    assert pairs["train"].features["label"].names == ["hand", "two_balls"]
    img = np.asarray(pairs["test"][0]["images"][0])
    assert img.shape == (224, 224, 3) and (img < 250).any() and (img[0] == 255).all()


@needs_shrec
@pytest.mark.slow
def test_shrec16_render_pairs_full(tmp_path):
    out = build_render_pairs(SHREC, tmp_path / "pairs")
    assert len(list((out / "rendering").iterdir())) == 600
    assert len((out / "ShapeNet-55" / "train.txt").read_text().split()) == 480
