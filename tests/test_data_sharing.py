"""A loader's dataset through the Hub round trip keeps what it is: the upload is replaced at huggingface_hub's public
boundary (`HfApi.create_repo`, `HfApi.upload_folder`), the captured folder is read back with `datasets.load_dataset`,
and the recorded metadata (up axis, source layout, class names, sampling) must come back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clip2point_hf.data import dataset_metadata, load_dataset_from_hub, load_mesh_folder, push_dataset_to_hub
from clip2point_hf.data.cache import META_FILE
from conftest import capture_hub_uploads, write_tetra_mesh_folder


@pytest.fixture
def mesh_dataset(tmp_path):
    """A two-class mesh folder through `load_mesh_folder` (z-up, 64 points), train and test splits."""
    write_tetra_mesh_folder(tmp_path / "meshes")
    return load_mesh_folder(tmp_path / "meshes", num_points=64, up_axis="z", cache_dir=tmp_path / "cache")


def test_metadata_survives_the_hub_round_trip(mesh_dataset, tmp_path, monkeypatch):
    from datasets import load_dataset

    recorded = dataset_metadata(mesh_dataset)
    assert recorded["up_axis"] == "z" and recorded["class_names"] == ["cone", "cup"]
    calls = capture_hub_uploads(monkeypatch, tmp_path / "repo")
    assert push_dataset_to_hub(mesh_dataset, "org/meshes") == "commit"
    assert [c[:2] for c in calls] == [("create_repo", "org/meshes"), ("upload_folder", "org/meshes")]
    assert all(c[2]["repo_type"] == "dataset" for c in calls)
    repo = tmp_path / "repo"
    files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        META_FILE,
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
    ]

    # `datasets.load_dataset` alone: the rows, the features (class names, cloud shape), and no metadata.
    plain = load_dataset(str(repo), cache_dir=str(tmp_path / "hf"))
    assert sorted(plain) == ["test", "train"] and plain.num_rows == {"test": 2, "train": 4}
    assert plain["train"].features == mesh_dataset["train"].features
    assert plain["train"].features["label"].names == ["cone", "cup"]
    np.testing.assert_array_equal(
        np.asarray(plain["train"]["points"]), np.asarray(mesh_dataset["train"]["points"])
    )
    assert dataset_metadata(plain) == {}  # what the description held does not travel by itself

    # `load_dataset_from_hub` puts it back.
    shared = load_dataset_from_hub(repo, cache_dir=tmp_path / "hf")
    assert dataset_metadata(shared) == recorded
    assert dataset_metadata(shared["test"])["up_axis"] == "z"
    assert json.loads((repo / META_FILE).read_text()) == recorded
    card = (repo / "README.md").read_text()
    assert "data/train-*" in card and "up axis: z" in card


def test_one_split_goes_up_as_train(mesh_dataset, tmp_path, monkeypatch):
    capture_hub_uploads(monkeypatch, tmp_path / "repo")
    push_dataset_to_hub(mesh_dataset["test"], "org/test-only")
    shared = load_dataset_from_hub(tmp_path / "repo", split="train", cache_dir=tmp_path / "hf")
    assert len(shared) == 2 and dataset_metadata(shared)["class_names"] == ["cone", "cup"]
