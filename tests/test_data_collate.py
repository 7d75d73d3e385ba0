"""Training-time sub-sampling/augmentation (never cached) and collation into torch tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clip2point_hf.data import (
    PointCloudTransform,
    collate_point_clouds,
    load_mesh_folder,
    point_cloud_dataloader,
)

try:
    from test_data_helpers import make_mesh_folder
except ImportError:  # tests/ imported as a package
    from .test_data_helpers import make_mesh_folder


@pytest.fixture(scope="module")
def mesh_ds(tmp_path_factory):
    import datasets

    datasets.disable_progress_bars()
    tmp = tmp_path_factory.mktemp("collate")
    root = make_mesh_folder(tmp / "meshes")
    yield load_mesh_folder(root, num_points=64, with_normals=True, cache_dir=tmp / "cache")["train"]
    datasets.enable_progress_bars()


def test_set_transform_random_subsets_differ_each_access(mesh_ds):
    ds = mesh_ds.with_transform(
        PointCloudTransform(num_points=16, generator=torch.Generator().manual_seed(0))
    )
    a, b = ds[:3], ds[:3]
    assert a["points"].shape == (3, 16, 3) and a["points"].dtype == torch.float32
    assert a["normals"].shape == (3, 16, 3)
    assert a["label"].dtype == torch.long and a["name"] == ["m0", "m1", "m2"]
    assert not torch.equal(a["points"], b["points"])
    # each subset comes from the stored cloud, with its own normals
    full = mesh_ds.with_format("numpy")[:3]
    for k in range(3):
        stored = torch.from_numpy(full["points"][k])
        same = (a["points"][k][:, None, :] == stored[None, :, :]).all(dim=-1)  # (16, 64) exact matches
        assert same.any(dim=1).all()
        j = same.float().argmax(dim=1)
        assert torch.equal(a["normals"][k], torch.from_numpy(full["normals"][k])[j])
    # the cached data itself is untouched
    np.testing.assert_array_equal(mesh_ds.with_format("numpy")[:3]["points"], full["points"])
    row = ds[0]
    assert row["points"].shape == (16, 3)


def test_collate_with_numpy_format_and_dataloader(mesh_ds):
    t = PointCloudTransform(
        num_points=32, sampling="fps", rotate_up=True, scale=(0.8, 1.25), translate=0.1, jitter=(0.01, 0.05)
    )
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(
        mesh_ds.with_format("numpy"), batch_size=3, shuffle=True, generator=g, collate_fn=t.collate
    )
    batches = list(loader)
    assert [b["points"].shape[0] for b in batches] == [3, 3, 2]
    assert all(b["points"].shape[1:] == (32, 3) and b["label"].dtype == torch.long for b in batches)
    assert all(isinstance(b["path"], list) for b in batches)


def test_point_cloud_dataloader_batched_reads(mesh_ds):
    loader = point_cloud_dataloader(
        mesh_ds, 3, transform=PointCloudTransform(16), generator=torch.Generator().manual_seed(0)
    )
    batches = list(loader)
    assert [b["points"].shape for b in batches] == [(3, 16, 3), (3, 16, 3), (2, 16, 3)]
    assert sorted(n for b in batches for n in b["name"]) == sorted(mesh_ds["name"])
    plain = list(point_cloud_dataloader(mesh_ds, 4, shuffle=False, num_workers=2))
    assert plain[0]["points"].shape == (4, 64, 3) and plain[0]["label"].dtype == torch.int64
    np.testing.assert_array_equal(plain[1]["points"].numpy(), mesh_ds.with_format("numpy")[4:8]["points"])


def test_augmentations_are_what_they_say():
    pts = torch.randn(4, 50, 3)
    g = torch.Generator().manual_seed(1)
    # rotation about y keeps y and the horizontal radius
    rot, _ = PointCloudTransform(None, rotate_up=True, up_axis="y", generator=g).augment(pts)
    torch.testing.assert_close(rot[..., 1], pts[..., 1])
    torch.testing.assert_close(rot[..., [0, 2]].norm(dim=-1), pts[..., [0, 2]].norm(dim=-1))
    assert not torch.allclose(rot, pts)
    # isotropic scale in range, translation bounded
    sc, _ = PointCloudTransform(None, scale=(0.5, 2.0), anisotropic=False, generator=g).augment(pts)
    ratio = sc / pts
    assert ((ratio > 0.5 - 1e-5) & (ratio < 2.0 + 1e-5)).all()
    torch.testing.assert_close(ratio.amax(dim=(1, 2)), ratio.amin(dim=(1, 2)))
    tr, _ = PointCloudTransform(None, translate=0.2, generator=g).augment(pts)
    shift = tr - pts
    assert (shift.abs() <= 0.2 + 1e-6).all()
    torch.testing.assert_close(shift.amax(dim=1), shift.amin(dim=1))
    ji, _ = PointCloudTransform(None, jitter=(0.01, 0.02), generator=g).augment(pts)
    assert ((ji - pts).abs() <= 0.02 + 1e-6).all()
    first, _ = PointCloudTransform(10, sampling="first").augment(pts)
    torch.testing.assert_close(first, pts[:, :10])
    norm, _ = PointCloudTransform(20, normalize=True, generator=g).augment(pts * 7 + 3)
    torch.testing.assert_close(norm.norm(dim=-1).amax(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="cannot take 60 points"):
        PointCloudTransform(60).augment(pts)
    with pytest.raises(ValueError, match="sampling"):
        PointCloudTransform(sampling="bogus")
    assert math.isfinite(float(rot.sum()))


def test_collate_point_clouds_types():
    examples = [
        {"points": np.zeros((4, 3), np.float32), "label": 1, "name": "a"},
        {"points": np.ones((4, 3), np.float32), "label": 2, "name": "b"},
    ]
    out = collate_point_clouds(examples)
    assert out["points"].shape == (2, 4, 3) and out["label"].tolist() == [1, 2] and out["name"] == ["a", "b"]
    nested = collate_point_clouds([{"points": [[0.0, 0.0, 0.0]], "label": 0}])
    assert nested["points"].shape == (1, 1, 3) and nested["points"].dtype == torch.float32
