"""Training-time sub-sampling/augmentation (never cached), the keyed loader, and collation into torch tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clip2point_hf.data import (
    KeyedDataset,
    PointCloudBatchTransform,
    collate_point_clouds,
    load_mesh_folder,
)
from clip2point_hf.points_clip2point import UP_AXES, convert_up_axis
from clip2point_hf.seeding import keyed_generator

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


def _generators(count: int, epoch: int = 0) -> list[torch.Generator]:
    return [keyed_generator(0, "test", epoch, i) for i in range(count)]


def test_random_subsets_are_keyed_by_epoch_and_index(mesh_ds):
    data = KeyedDataset(mesh_ds, PointCloudBatchTransform(num_points=16), seed=0, stream="train")
    a, b = data.__getitems__([(0, 0), (0, 1), (0, 2)]), data.__getitems__([(1, 0), (1, 1), (1, 2)])
    assert a["points"].shape == (3, 16, 3) and a["points"].dtype == torch.float32
    assert a["normals"].shape == (3, 16, 3)
    assert a["label"].dtype == torch.long and a["index"].tolist() == [0, 1, 2]
    assert not torch.equal(a["points"], b["points"])  # another epoch, other draws
    again = data.__getitems__([(0, 2), (0, 0)])  # the same key, the same draw, whatever the batch
    assert torch.equal(again["points"][0], a["points"][2]) and torch.equal(again["points"][1], a["points"][0])
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
    row = data[0]
    assert row["points"].shape == (1, 16, 3)


def test_keyed_loader_with_every_augmentation(mesh_ds):
    t = PointCloudBatchTransform(
        num_points=32, sampling="fps", rotate=True, scale=(0.8, 1.25), translate=0.1, jitter=0.01
    )
    loader = KeyedDataset(mesh_ds, t, seed=0, stream="train").loader(3, shuffle=True, drop_last=False)
    batches = list(loader)
    assert [b["points"].shape[0] for b in batches] == [3, 3, 2]
    assert all(b["points"].shape[1:] == (32, 3) and b["label"].dtype == torch.long for b in batches)
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(mesh_ds.num_rows))
    loader.sampler.set_epoch(1)
    assert [b["index"].tolist() for b in loader] != [b["index"].tolist() for b in batches]


def test_keyed_loader_batched_reads(mesh_ds):
    loader = KeyedDataset(mesh_ds, PointCloudBatchTransform(num_points=16), 0, "train").loader(
        3, shuffle=True, drop_last=False
    )
    batches = list(loader)
    assert [b["points"].shape for b in batches] == [(3, 16, 3), (3, 16, 3), (2, 16, 3)]
    plain = list(
        KeyedDataset(mesh_ds, None, 0, "plain").loader(4, shuffle=False, drop_last=False, num_workers=2)
    )
    assert plain[0]["points"].shape == (4, 64, 3) and plain[0]["label"].dtype == torch.int64
    assert sorted(n for b in plain for n in b["name"]) == sorted(mesh_ds["name"])
    np.testing.assert_array_equal(plain[1]["points"].numpy(), mesh_ds.with_format("numpy")[4:8]["points"])


def test_augmentations_are_what_they_say():
    pts = torch.randn(4, 50, 3)

    def run(transform: PointCloudBatchTransform, clouds: torch.Tensor = pts) -> torch.Tensor:
        return transform({"points": clouds.numpy()}, range(len(clouds)), _generators(len(clouds)))["points"]

    # rotation about y keeps y and the horizontal radius
    rot = run(PointCloudBatchTransform(rotate=True))
    torch.testing.assert_close(rot[..., 1], pts[..., 1])
    torch.testing.assert_close(rot[..., [0, 2]].norm(dim=-1), pts[..., [0, 2]].norm(dim=-1))
    assert not torch.allclose(rot, pts)
    # isotropic scale in range, translation bounded
    sc = run(PointCloudBatchTransform(scale=(0.5, 2.0), anisotropic=False))
    ratio = sc / pts
    assert ((ratio > 0.5 - 1e-5) & (ratio < 2.0 + 1e-5)).all()
    torch.testing.assert_close(ratio.amax(dim=(1, 2)), ratio.amin(dim=(1, 2)))
    tr = run(PointCloudBatchTransform(translate=0.2))
    shift = tr - pts
    assert (shift.abs() <= 0.2 + 1e-6).all()
    torch.testing.assert_close(shift.amax(dim=1), shift.amin(dim=1))
    ji = run(PointCloudBatchTransform(jitter=0.01))
    assert ((ji - pts).abs() <= 0.03 + 1e-6).all() and not torch.equal(ji, pts)
    subset = run(PointCloudBatchTransform(num_points=10))
    assert all((subset[k][:, None] == pts[k][None]).all(-1).any(-1).all() for k in range(4))
    norm = run(PointCloudBatchTransform(num_points=20, normalize=True), pts * 7 + 3)
    torch.testing.assert_close(norm.norm(dim=-1).amax(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="a cloud has only 50 points"):
        run(PointCloudBatchTransform(num_points=60))
    with pytest.raises(ValueError, match="sampling"):
        PointCloudBatchTransform(sampling="bogus")
    assert math.isfinite(float(rot.sum()))


@pytest.mark.parametrize("up_axis", UP_AXES)
def test_every_signed_up_axis_comes_out_y_up(up_axis):
    pts = torch.randn(2, 30, 3)
    normals = torch.nn.functional.normalize(torch.randn(2, 30, 3), dim=-1)
    rows = {"points": pts.numpy(), "normals": normals.numpy()}
    out = PointCloudBatchTransform(up_axis=up_axis)(rows, [0, 1], _generators(2))
    torch.testing.assert_close(out["points"], convert_up_axis(pts, up_axis))
    torch.testing.assert_close(out["normals"], convert_up_axis(normals, up_axis))
    # the turn about the up axis happens in the y-up frame: the stored up coordinate is kept
    sign, axis = (-1.0, up_axis[1]) if up_axis.startswith("-") else (1.0, up_axis)
    turned = PointCloudBatchTransform(up_axis=up_axis, rotate=True)(rows, [0, 1], _generators(2))
    torch.testing.assert_close(turned["points"][..., 1], sign * pts[..., "xyz".index(axis)])
    with pytest.raises(ValueError, match="up_axis"):
        PointCloudBatchTransform(up_axis="w")


def test_collate_point_clouds_types():
    examples = [
        {"points": np.zeros((4, 3), np.float32), "label": 1, "name": "a"},
        {"points": np.ones((4, 3), np.float32), "label": 2, "name": "b"},
    ]
    out = collate_point_clouds(examples)
    assert out["points"].shape == (2, 4, 3) and out["label"].tolist() == [1, 2] and out["name"] == ["a", "b"]
    nested = collate_point_clouds([{"points": [[0.0, 0.0, 0.0]], "label": 0}])
    assert nested["points"].shape == (1, 1, 3) and nested["points"].dtype == torch.float32
