"""Tests of point-cloud preparation before rendering (`points_clip2point`): normalisation into the unit
sphere, farthest-point and random sampling against their definitions and a brute-force FPS, and the up-axis
rotations against known points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip2point_hf.points_clip2point import (
    convert_up_axis,
    farthest_point_sample,
    normalize_point_cloud,
    random_point_sample,
)


def test_normalize_point_cloud():
    pts = (
        torch.rand(10, 3, generator=torch.Generator().manual_seed(10)) * 6
        - 3
        + torch.tensor([1.0, -2.0, 5.0])
    )
    out, centroid, scale = normalize_point_cloud(pts)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-6, rtol=0)
    assert out.norm(dim=-1).max().item() == pytest.approx(1.0)
    torch.testing.assert_close(out * scale + centroid, pts)
    single, _, s1 = normalize_point_cloud(torch.tensor([[0.1, 0.2, 0.3]]))
    assert (single == 0).all() and s1 == 0
    half, _, _ = normalize_point_cloud(pts.half()[None])
    assert half.dtype == torch.float16 and torch.isfinite(half).all()


def test_farthest_point_sample_matches_greedy_definition():
    g = torch.Generator().manual_seed(11)
    pts = torch.rand(2, 60, 3, generator=g)
    idx = farthest_point_sample(pts, 8, start_index=torch.tensor([3, 10]))
    for b, start in enumerate((3, 10)):
        chosen = [start]
        for _ in range(7):
            d = torch.stack([(pts[b] - pts[b, c]).square().sum(-1) for c in chosen]).amin(0)
            chosen.append(int(d.argmax()))
        assert idx[b].tolist() == chosen
    assert (
        farthest_point_sample(pts[0], 5).tolist() == farthest_point_sample(pts[0], 5, start_index=0).tolist()
    )
    a = farthest_point_sample(pts, 5, generator=torch.Generator().manual_seed(0))
    b = farthest_point_sample(pts, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="num_samples"):
        farthest_point_sample(pts, 61)
    with pytest.raises(ValueError, match="num_samples"):
        farthest_point_sample(pts, 0)


def _brute_force_fps(points: np.ndarray, k: int, start: int) -> list[int]:
    """O(N K) farthest-point sampling in float32 numpy, written from the definition (ties: smallest index)."""
    p = points.astype(np.float32)
    min_d2 = np.full(len(p), np.inf, dtype=np.float32)
    chosen = [start]
    for _ in range(k - 1):
        d = p - p[chosen[-1]]
        min_d2 = np.minimum(min_d2, (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2])
        chosen.append(int(np.argmax(min_d2)))
    return chosen


def test_farthest_point_sample_fpsample_path_is_exactly_the_torch_loop(monkeypatch):
    """With ``fpsample`` installed, CPU float32 clouds take its path: same indices as our loop and as a
    brute-force FPS, also where the farthest distance ties (a grid, duplicated points, quantised data)."""
    fpsample = pytest.importorskip("fpsample")
    import clip2point_hf.points_clip2point as module

    calls = []
    original = fpsample.fps_sampling
    monkeypatch.setattr(fpsample, "fps_sampling", lambda *a, **k: calls.append(1) or original(*a, **k))
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3)
    clouds = {
        "gaussian": rng.normal(size=(3000, 3)),
        "grid": grid,
        "duplicates": np.concatenate([rng.normal(size=(50, 3))] * 8),
        "quantised": np.round(rng.normal(size=(2000, 3)) * 4) / 4,
    }
    for name, cloud in clouds.items():
        pts = torch.from_numpy(cloud.astype(np.float32))
        k = min(300, len(cloud) // 2)
        for start in (0, len(cloud) - 1, 17):
            calls.clear()
            got = farthest_point_sample(pts, k, start_index=start)
            assert calls, "the fpsample path was not taken"
            torch_loop = module._farthest_point_sample_torch(pts[None], k, torch.tensor([start]))[0]
            assert got.tolist() == torch_loop.tolist(), (name, start)
            assert got.tolist() == _brute_force_fps(cloud, k, start), (name, start)
    batch = torch.from_numpy(rng.normal(size=(3, 500, 3)).astype(np.float32))
    starts = torch.tensor([0, 250, 499])
    assert torch.equal(
        farthest_point_sample(batch, 64, start_index=starts),
        module._farthest_point_sample_torch(batch, 64, starts),
    )
    # Not taken where the loop must run: float64 (distances in float64) and non-finite coordinates.
    calls.clear()
    farthest_point_sample(batch.double(), 8)
    bad = batch.clone()
    bad[0, 3] = float("nan")
    farthest_point_sample(bad, 8)
    assert not calls


def test_random_point_sample_and_up_axis():
    g = torch.Generator().manual_seed(0)
    idx = random_point_sample(100, 30, generator=g)
    assert idx.unique().numel() == 30 and idx.max() < 100
    small = random_point_sample(5, 12, generator=torch.Generator().manual_seed(0))
    assert sorted(small[:5].tolist()) == [0, 1, 2, 3, 4] and small.max() < 5
    p = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(convert_up_axis(p, "z"), torch.tensor([[-2.0, 3.0, -1.0]]))
    assert convert_up_axis(p, "y") is p
    with pytest.raises(ValueError, match="up_axis"):
        convert_up_axis(p, "w")


@pytest.mark.parametrize(
    "axis, up, known, image",
    [  # each storage axis goes to +y by a right-handed rotation; ``known`` (1, 2, 3) lands on ``image``
        ("x", [1.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-2.0, 1.0, 3.0]),
        ("-x", [-1.0, 0.0, 0.0], [1.0, 2.0, 3.0], [2.0, -1.0, 3.0]),
        ("-y", [0.0, -1.0, 0.0], [1.0, 2.0, 3.0], [1.0, -2.0, -3.0]),
        ("-z", [0.0, 0.0, -1.0], [1.0, 2.0, 3.0], [1.0, -3.0, 2.0]),
        ("z", [0.0, 0.0, 1.0], [1.0, 2.0, 3.0], [-2.0, 3.0, -1.0]),
    ],
)
def test_convert_up_axis_signed_axes(axis, up, known, image):
    assert torch.equal(convert_up_axis(torch.tensor([up]), axis), torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.equal(convert_up_axis(torch.tensor([known]), axis), torch.tensor([image]))
    # a proper rotation: the images of the basis form a matrix with determinant +1 (no mirroring)
    basis = convert_up_axis(torch.eye(3, dtype=torch.float64), axis)
    assert torch.equal(basis @ basis.T, torch.eye(3, dtype=torch.float64))
    assert torch.linalg.det(basis).item() == pytest.approx(1.0)
