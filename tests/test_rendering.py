"""Tests of the depth renderer against independent expectations: a brute-force rasteriser written
straight from the pixel rule and the table of view bases of docs/design.md ("Depth rendering"), and known geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clip2point_hf.points_clip2point import normalize_point_cloud
from clip2point_hf.rendering_clip2point import (
    CLIP_MEAN,
    CLIP_STD,
    VIEW_PRESETS,
    DepthRenderer,
    camera_basis,
    resolve_views,
)

H = math.sqrt(0.5)  # the table's .707

# docs/design.md, "Camera basis" table: (elev, azim) -> camera at, image up, image left, looking along.
BASIS_TABLE = [
    ((0, 0), (0, 0, 1), (0, 1, 0), (-1, 0, 0), (0, 0, -1)),
    ((90, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (0, -1, 0)),
    ((180, 0), (0, 0, -1), (0, 1, 0), (1, 0, 0), (0, 0, 1)),
    ((270, 0), (0, -1, 0), (0, 0, 1), (-1, 0, 0), (0, 1, 0)),
    ((225, -45), (0.5, -H, -0.5), (0.5, H, -0.5), (H, 0, H), (-0.5, H, 0.5)),
    ((225, 45), (-0.5, -H, -0.5), (-0.5, H, -0.5), (H, 0, -H), (0.5, H, 0.5)),
    ((315, -45), (-0.5, -H, 0.5), (-0.5, H, 0.5), (-H, 0, -H), (0.5, H, -0.5)),
    ((315, 45), (0.5, -H, 0.5), (0.5, H, 0.5), (-H, 0, H), (-0.5, H, -0.5)),
    ((0, -90), (-1, 0, 0), (0, 1, 0), (0, 0, -1), (1, 0, 0)),
    ((0, 90), (1, 0, 0), (0, 1, 0), (0, 0, 1), (-1, 0, 0)),
    ((-90, 180), (0, -1, 0), (0, 0, 1), (-1, 0, 0), (0, 1, 0)),
]
TABLE_BASES = {row[0]: row[1:] for row in BASIS_TABLE}


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------


def spec_basis_float64(elev: float, azim: float):
    """The camera formula of docs/design.md ("Camera basis") in float64 (valid away from straight up/down views)."""
    e, a = math.radians(elev), math.radians(azim)
    c = np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
    z = -c / np.linalg.norm(c)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return c, y, x, z  # centre (unit distance), up, left, look


def brute_force(points, bases, distances, size, radius, clip_free=True):
    """Loop over every pixel and every point (the pixel rule of docs/design.md), float64.

    points (B, N, 3); bases[v] = (unit centre, up, left, look); distances (B, V).
    Returns depth (B, V, S, S) with 0 background and index (B, V, S, S) with -1 background.
    """
    points = np.asarray(points, dtype=np.float64)
    b_count = points.shape[0]
    v_count = len(bases)
    depth = np.zeros((b_count, v_count, size, size))
    index = -np.ones((b_count, v_count, size, size), dtype=np.int64)
    for b in range(b_count):
        for v, (unit_c, up, left, look) in enumerate(bases):
            d = float(distances[b][v])
            cam = max(d, 1 / d) if clip_free else d
            centre = np.asarray(unit_c, dtype=np.float64) * cam
            view = [
                (float((p / d - centre) @ left), float((p / d - centre) @ up), float((p / d - centre) @ look))
                for p in points[b]
            ]
            for i in range(size):
                y_ndc = 1 - (2 * i + 1) / size
                for j in range(size):
                    x_ndc = 1 - (2 * j + 1) / size
                    best, best_n = math.inf, -1
                    for n, (x, y, z) in enumerate(view):
                        if z < 0:
                            continue
                        if (x_ndc - x) ** 2 + (y_ndc - y) ** 2 < radius**2 and z < best:
                            best, best_n = z, n  # strict '<': the smallest index wins ties
                    if best_n >= 0:
                        depth[b, v, i, j] = best
                        index[b, v, i, j] = best_n
    return depth, index


def parity_image_reference(depth):
    """docs/design.md's "Depth to intensity", written per view with numpy."""
    depth = np.asarray(depth, dtype=np.float64)
    grey = np.ones_like(depth)
    for idx in np.ndindex(*depth.shape[:-2]):
        img = depth[idx]
        fg = img > 0
        if fg.any():
            z_max = img.max()
            z_min = img[fg].min() if fg.all() else min(img[fg].min(), 1.0)  # background counts as 1
            grey[idx][fg] = (img[fg] - z_min) / z_max * 200 / 255
    pix = np.repeat(grey[..., None, :, :], 3, axis=-3)
    mean = np.array(CLIP_MEAN).reshape(3, 1, 1)
    std = np.array(CLIP_STD).reshape(3, 1, 1)
    return (pix - mean) / std


def random_clouds(b, n, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(b, n, 3, generator=g) * 2 - 1
    return normalize_point_cloud(pts)[0] * scale


# ---------------------------------------------------------------------------------------------
# Cameras and views
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", BASIS_TABLE, ids=[f"{r[0][0]},{r[0][1]}" for r in BASIS_TABLE])
def test_camera_basis_matches_spec_table(row):
    (elev, azim), at, up, left, look = row
    basis = camera_basis(elev, azim, 1.0)
    torch.testing.assert_close(basis.centre, torch.tensor(at, dtype=torch.float32), atol=1e-6, rtol=0)
    torch.testing.assert_close(basis.y_axis, torch.tensor(up, dtype=torch.float32), atol=1e-6, rtol=0)
    torch.testing.assert_close(basis.x_axis, torch.tensor(left, dtype=torch.float32), atol=1e-6, rtol=0)
    torch.testing.assert_close(basis.z_axis, torch.tensor(look, dtype=torch.float32), atol=1e-6, rtol=0)


def test_camera_basis_batched_and_distance():
    v = torch.tensor(VIEW_PRESETS["reference10"])
    basis = camera_basis(v[:, 0], v[:, 1], torch.full((10,), 2.5))
    assert basis.centre.shape == (10, 3)
    torch.testing.assert_close(basis.centre.norm(dim=-1), torch.full((10,), 2.5))
    # orthonormal, right-handed (x cross y = z)
    r = torch.stack([basis.x_axis, basis.y_axis, basis.z_axis], dim=-2)
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3).expand(10, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        torch.linalg.cross(basis.x_axis, basis.y_axis), basis.z_axis, atol=1e-6, rtol=0
    )


def test_view_presets_follow_spec():
    assert [v[:2] for v in VIEW_PRESETS["reference10"]] == [
        (0, 0), (90, 0), (180, 0), (270, 0), (225, -45), (225, 45), (315, -45), (315, 45), (0, -90), (0, 90)
    ]  # fmt: skip
    assert [v[:2] for v in VIEW_PRESETS["reference6"]] == [
        (0, 0),
        (0, 90),
        (0, 180),
        (0, 270),
        (90, 0),
        (-90, 180),
    ]
    assert all(v[2] == 1 for preset in VIEW_PRESETS.values() for v in preset)
    ref = camera_basis(*torch.tensor(VIEW_PRESETS["reference10"]).T).centre
    up = camera_basis(*torch.tensor(VIEW_PRESETS["upper10"]).T).centre
    diag = slice(4, 8)
    assert (ref[diag, 1] < -0.7).all() and (up[diag, 1] > 0.7).all()  # from below -> from above
    torch.testing.assert_close(up[diag][:, [0, 2]], ref[diag][:, [0, 2]], atol=1e-6, rtol=0)
    torch.testing.assert_close(up[:4], ref[:4])
    torch.testing.assert_close(up[8:], ref[8:])


def test_resolve_views_forms_and_errors():
    assert resolve_views("reference6").shape == (6, 3)
    t = resolve_views([(10, 20), (30, 40, 1.5)])
    torch.testing.assert_close(t, torch.tensor([[10.0, 20.0, 1.0], [30.0, 40.0, 1.5]]))
    assert resolve_views(torch.zeros(2, 4, 2)).shape == (2, 4, 3)
    with pytest.raises(ValueError, match="preset"):
        resolve_views("nope")
    with pytest.raises(ValueError, match="views"):
        resolve_views([])
    with pytest.raises(ValueError, match="distance"):
        resolve_views([(0, 0, 0.0)])
    with pytest.raises(ValueError, match="NaN"):
        resolve_views([(float("nan"), 0)])
    with pytest.raises(ValueError, match="views"):
        resolve_views([(1, 2, 3, 4)])


# ---------------------------------------------------------------------------------------------
# Rasteriser against the brute-force reference
# ---------------------------------------------------------------------------------------------


def _check_against_brute_force(renderer, points, views, bases, distances, clip_free=True):
    out = renderer.rasterize(points, views, distances=distances)
    b = points.shape[0]
    dist = distances if distances is not None else torch.tensor([[row[2] for row in views]] * b)
    ref_depth, ref_index = brute_force(
        points.double(), bases, dist, renderer.image_size, renderer.point_radius, clip_free
    )
    np.testing.assert_array_equal(out.point_index.numpy(), ref_index)
    np.testing.assert_allclose(out.depth.numpy(), ref_depth, atol=2e-6, rtol=0)
    assert (out.depth[out.point_index < 0] == 0).all()
    return out


def test_zbuffer_matches_brute_force_on_reference_views():
    """The 10 reference views with the basis table's bases, S = 16, N = 20 (ties included)."""
    pts = random_clouds(2, 20, seed=0)
    pts[0, 5] = pts[0, 3]  # duplicate point: the smaller index must win
    pts[1, 7] = pts[1, 19]
    views = VIEW_PRESETS["reference10"]
    bases = [(TABLE_BASES[(int(e), int(a))]) for e, a, _ in views]
    for radius in (0.15, 0.3):
        renderer = DepthRenderer(image_size=16, point_radius=radius)
        out = _check_against_brute_force(renderer, pts, views, bases, None)
        assert (out.point_index[0] == 5).sum() == 0 and (out.point_index[1] == 19).sum() == 0
        assert (out.point_index[0] == 3).any()


@pytest.mark.parametrize("clip_free", [True, False])
def test_zbuffer_matches_brute_force_random_views_and_zoom(clip_free):
    """Arbitrary views, per-sample distances (zoom in and out, some points off-image), odd size."""
    g = torch.Generator().manual_seed(1)
    pts = random_clouds(3, 20, seed=2)
    views = [
        (float(e), float(a), 1.0) for e, a in zip(torch.rand(4, generator=g) * 140 - 70, torch.rand(4) * 360)
    ]
    bases = [spec_basis_float64(e, a) for e, a, _ in views]
    distances = torch.tensor([[0.9, 1.0, 1.1, 2.0], [0.5, 0.95, 1.3, 0.7], [1.0, 1.0, 1.0, 1.0]])
    renderer = DepthRenderer(image_size=15, point_radius=0.25, clip_free_zoom=clip_free)
    out = _check_against_brute_force(renderer, pts, views, bases, distances, clip_free)
    # sample 1, view 0 has d = 0.5: with the reference's camera (at d) part of the cloud is behind it
    look = torch.tensor(bases[0][3], dtype=torch.float32)
    cam = 0.5 if not clip_free else 2.0
    behind = ((pts[1] / 0.5) @ look + cam < 0).nonzero().flatten()
    if clip_free:
        assert behind.numel() == 0
    else:
        assert behind.numel() > 0
        assert not torch.isin(out.point_index[1, 0], behind).any()


def test_per_sample_views_tensor():
    pts = random_clouds(2, 20, seed=3)
    per_sample = torch.tensor([VIEW_PRESETS["reference6"][:3], VIEW_PRESETS["reference6"][3:]])
    renderer = DepthRenderer(image_size=16, point_radius=0.2)
    out = renderer.rasterize(pts, per_sample)
    for b in range(2):
        single = renderer.rasterize(pts[b : b + 1], per_sample[b])
        torch.testing.assert_close(out.point_index[b], single.point_index[0], rtol=0, atol=0)
        torch.testing.assert_close(out.depth[b], single.depth[0])


def test_chunking_and_fast_path_agree():
    pts = random_clouds(5, 300, seed=4)
    ref = DepthRenderer(chunk_size=5)
    raster = ref.rasterize(pts)
    image = ref.render(pts)
    for chunk in (1, 2):
        other = DepthRenderer(chunk_size=chunk)
        r2 = other.rasterize(pts)
        torch.testing.assert_close(r2.point_index, raster.point_index, rtol=0, atol=0)
        torch.testing.assert_close(r2.depth, raster.depth, rtol=0, atol=0)
        torch.testing.assert_close(other.render(pts), image, rtol=0, atol=0)
    # the fast path (float z-buffer) equals depth_to_image of the indexed z-buffer
    torch.testing.assert_close(ref.depth_to_image(raster.depth), image, rtol=0, atol=1e-6)
    np.testing.assert_allclose(image.numpy(), parity_image_reference(raster.depth.numpy()), atol=2e-5)


# ---------------------------------------------------------------------------------------------
# Known geometry
# ---------------------------------------------------------------------------------------------


def test_point_at_origin_lands_at_image_centre():
    renderer = DepthRenderer(image_size=15, point_radius=0.05)  # r < one pixel (2/15)
    out = renderer.rasterize(torch.zeros(1, 1, 3), "reference10")
    for v in range(10):
        covered = (out.point_index[0, v] == 0).nonzero().tolist()
        assert covered == [[7, 7]]  # the centre pixel of an odd image, x_ndc(7) = y_ndc(7) = 0
        assert out.depth[0, v, 7, 7] == pytest.approx(1.0)  # camera at distance 1


def test_plane_facing_camera_has_constant_depth():
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(400, 2, generator=g) * 1.6 - 0.8
    plane = torch.cat([xy, torch.full((400, 1), 0.3)], dim=1)[None]  # z = 0.3 faces the (0, 0) camera
    for d in (1.0, 2.0):
        out = DepthRenderer(image_size=32).rasterize(plane, [(0, 0, d)])
        fg = out.point_index[0, 0] >= 0
        assert fg.sum() > 50
        expected = d - 0.3 / d  # camera at distance d, cloud scaled by 1/d
        torch.testing.assert_close(out.depth[0, 0][fg], torch.full((int(fg.sum()),), expected))


def _pixel_of(renderer, point, view):
    out = renderer.rasterize(torch.tensor([[point]], dtype=torch.float32), [view])
    rows, cols = (out.point_index[0, 0] == 0).nonzero(as_tuple=True)
    return rows.float().mean().item(), cols.float().mean().item()


def test_orientation_of_known_views():
    r = DepthRenderer(image_size=31, point_radius=0.05)
    c = 15
    row, col = _pixel_of(r, (0, 0, 0.8), (90, 0))  # top view: +Z at the image top
    assert row < c - 5 and col == c
    row, col = _pixel_of(r, (0.8, 0, 0), (90, 0))  # top view: image left is +X
    assert col < c - 5 and row == c
    row, col = _pixel_of(r, (0, 0.8, 0), (0, 0))  # front view: +Y up
    assert row < c - 5 and col == c
    row, col = _pixel_of(r, (0.8, 0, 0), (0, 0))  # front view (camera at +Z): +X on the right
    assert col > c + 5 and row == c
    row, col = _pixel_of(r, (0, 0, 0.8), (270, 0))  # bottom view: +Z also at the top (basis table)
    assert row < c - 5


def test_column_zero_is_view_plus_x_and_zoom_scales():
    r = DepthRenderer(image_size=16, point_radius=0.05)
    # view (0, 0): view +x is world -X. A point at view x = 0.9375 = x_ndc(0) lands in column 0.
    _, col = _pixel_of(r, (-0.9375, 0.0625, 0), (0, 0, 1))
    assert col == 0
    # distance 2 halves the offset from the centre: view x = 0.9375 / 2 -> x_ndc(j) = 0.46875 at j = 4
    _, col = _pixel_of(r, (-0.9375, 0.0625, 0), (0, 0, 2))
    assert col == pytest.approx(4.0)


def test_clip_free_zoom_keeps_the_near_side():
    near_point = torch.tensor([[[0.0, 0.0, 0.95]]])  # closest to the (0, 0) camera
    clip_free = DepthRenderer(image_size=16, point_radius=0.2, clip_free_zoom=True)
    reference = DepthRenderer(image_size=16, point_radius=0.2, clip_free_zoom=False)
    assert (clip_free.rasterize(near_point, [(0, 0, 0.9)]).point_index >= 0).any()
    assert (reference.rasterize(near_point, [(0, 0, 0.9)]).point_index < 0).all()  # clipped
    for renderer in (clip_free, reference):  # d >= 1: identical to the reference
        a = renderer.rasterize(near_point, [(0, 0, 1.05)])
        assert a.depth.max() == pytest.approx(1.05 - 0.95 / 1.05)


# ---------------------------------------------------------------------------------------------
# Depth to image
# ---------------------------------------------------------------------------------------------


def test_depth_to_image_parity_formula_and_background():
    renderer = DepthRenderer(image_size=4)
    depth = torch.zeros(1, 2, 4, 4)
    depth[0, 0, 1, 1], depth[0, 0, 2, 2], depth[0, 0, 3, 0] = 0.5, 1.5, 2.0
    grey = renderer.depth_to_intensity(depth)
    # z_max = 2, z_min = min(0.5, 1) = 0.5
    assert grey[0, 0, 1, 1] == pytest.approx(0.0)
    assert grey[0, 0, 2, 2] == pytest.approx((1.5 - 0.5) / 2 * 200 / 255)
    assert grey[0, 0, 3, 0] == pytest.approx((2.0 - 0.5) / 2 * 200 / 255)
    assert (grey[0, 0][depth[0, 0] == 0] == 1).all() and (grey[0, 1] == 1).all()  # background, empty view
    depth[0, 1, 0, 0] = 1.2  # z_min is capped at 1: (1.2 - 1) / 1.2
    assert renderer.depth_to_intensity(depth)[0, 1, 0, 0] == pytest.approx(0.2 / 1.2 * 200 / 255)
    pix = renderer.depth_to_image(depth)
    np.testing.assert_allclose(pix.numpy(), parity_image_reference(depth.numpy()), atol=1e-5)


def test_depth_to_image_minmax_mode():
    renderer = DepthRenderer(image_size=4, depth_mode="minmax")
    depth = torch.zeros(1, 2, 4, 4)
    depth[0, 0, 0, 0], depth[0, 0, 0, 1], depth[0, 0, 0, 2] = 1.2, 1.6, 2.0
    depth[0, 1, 2, 2] = 0.7  # a single depth -> 0
    grey = renderer.depth_to_intensity(depth)
    torch.testing.assert_close(grey[0, 0, 0, :3], torch.tensor([0.0, 0.5, 1.0]) * 200 / 255)
    assert grey[0, 1, 2, 2] == 0 and grey[0, 1].sum() == 15


def test_densify_mode_is_finite_and_fills_holes():
    pts = random_clouds(1, 200, seed=6)
    plain = DepthRenderer(image_size=64).render_intensity(pts)
    dense = DepthRenderer(image_size=64, densify=True).render_intensity(pts)
    assert torch.isfinite(dense).all() and dense.min() >= 0 and dense.max() <= 1
    assert (dense < 0.99).sum() > (plain < 0.99).sum()  # more covered pixels


# ---------------------------------------------------------------------------------------------
# Differentiability, dtypes, degenerate inputs
# ---------------------------------------------------------------------------------------------


def test_gradient_flows_to_point_depth():
    pts = random_clouds(2, 50, seed=7).requires_grad_(True)
    renderer = DepthRenderer(image_size=32, chunk_size=1)
    renderer.rasterize(pts, "reference6").depth.sum().backward()
    assert pts.grad is not None and pts.grad.abs().sum() > 0 and torch.isfinite(pts.grad).all()
    pts.grad = None
    renderer.render(pts, "reference6").sum().backward()
    assert pts.grad.abs().sum() > 0 and torch.isfinite(pts.grad).all()
    with torch.no_grad():
        same = renderer.render(pts.detach(), "reference6")
    torch.testing.assert_close(renderer.render(pts, "reference6").detach(), same)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_input_dtypes_render_like_float32(dtype):
    pts = random_clouds(1, 100, seed=8)
    r = DepthRenderer(image_size=32)
    a = r.rasterize(pts.to(dtype).float())
    b = r.rasterize(pts.to(dtype))
    torch.testing.assert_close(a.point_index, b.point_index, rtol=0, atol=0)
    assert b.depth.dtype == torch.float32


def test_bad_and_degenerate_inputs():
    r = DepthRenderer(image_size=16)
    with pytest.raises(ValueError, match="points"):
        r.render(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="points"):
        r.render(torch.zeros(1, 4, 2))
    with pytest.raises(TypeError, match="points"):
        r.render(torch.zeros(1, 4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="points"):
        r.render(torch.zeros(1, 0, 3))
    with pytest.raises(ValueError, match="distances"):
        r.render(torch.zeros(2, 4, 3), distances=torch.ones(3, 7))
    with pytest.raises(ValueError, match="image_size"):
        DepthRenderer(image_size=0)
    with pytest.raises(ValueError, match="depth_mode"):
        DepthRenderer(depth_mode="linear")
    with pytest.raises(ValueError, match="point_radius"):
        DepthRenderer(point_radius=0)
    # NaN / Inf points cover nothing (the renderer never checks values); never NaN pixels
    pts = random_clouds(1, 30, seed=9)
    pts[0, :5] = float("nan")
    pts[0, 5:8] = float("inf")
    out = r.rasterize(pts)
    assert not ((out.point_index >= 0) & (out.point_index < 8)).any()
    assert torch.isfinite(r.render(pts)).all()
    # everything NaN: blank (white) views
    blank = r.render_intensity(torch.full((1, 4, 3), float("nan")))
    assert (blank == 1).all()


def test_zero_radius_cloud_renders_a_centred_dot():
    same = torch.full((1, 50, 3), 0.3)
    normalized, centroid, scale = normalize_point_cloud(same)
    assert (normalized == 0).all() and scale.item() == 0
    torch.testing.assert_close(centroid, torch.full((1, 3), 0.3))
    grey = DepthRenderer(image_size=15, point_radius=0.05).render_intensity(normalized)
    assert torch.isfinite(grey).all()
    assert (grey[:, :, 7, 7] == 0).all() and (grey.flatten(2).sum(-1) == 15 * 15 - 1).all()


# ---------------------------------------------------------------------------------------------
# Execution paths: compile-friendliness, the CUDA-style (non-reusing) workspace
# ---------------------------------------------------------------------------------------------


def test_traces_as_one_graph_under_torch_compile():
    """No graph breaks (so no host synchronisation) in render and rasterize: fullgraph=True."""
    renderer = DepthRenderer(image_size=32)
    pts = random_clouds(2, 64, seed=12)
    views = torch.tensor(VIEW_PRESETS["reference10"])
    dist = torch.full((2, 10), 1.05)
    render = torch.compile(lambda p, v, d: renderer.render(p, v, d), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(render(pts, views, dist), renderer.render(pts, views, dist), rtol=0, atol=1e-6)
    raster = torch.compile(lambda p, v: renderer.rasterize(p, v), backend="aot_eager", fullgraph=True)
    got, ref = raster(pts, views), renderer.rasterize(pts, views)
    torch.testing.assert_close(got.point_index, ref.point_index, rtol=0, atol=0)
    torch.testing.assert_close(got.depth, ref.depth, rtol=0, atol=0)


def test_non_reusing_workspace_path_agrees(monkeypatch):
    """The path CUDA takes (in-place ops on fresh buffers, one chunk) gives the CPU path's result."""
    import clip2point_hf.rendering_clip2point as module

    pts = random_clouds(3, 200, seed=13)
    cpu = DepthRenderer(image_size=48, chunk_size=1)
    expected_img, expected = cpu.render(pts), cpu.rasterize(pts)
    original = module._Workspace.__init__

    def fresh_buffers(self, device, reuse=True):
        original(self, device, reuse=False)

    monkeypatch.setattr(module._Workspace, "__init__", fresh_buffers)
    for chunk in (1, None):
        other = DepthRenderer(image_size=48, chunk_size=chunk)
        torch.testing.assert_close(other.render(pts), expected_img, rtol=0, atol=0)
        got = other.rasterize(pts)
        torch.testing.assert_close(got.point_index, expected.point_index, rtol=0, atol=0)
        torch.testing.assert_close(got.depth, expected.depth, rtol=0, atol=0)
        torch.testing.assert_close(other.render_intensity(pts), cpu.render_intensity(pts), rtol=0, atol=0)


@pytest.mark.parametrize("fresh_buffers", [False, True])
def test_points_in_passes_give_identical_zbuffers(monkeypatch, fresh_buffers):
    """A cloud split into passes of a few points (``point_chunk_size``) gives exactly the one-pass z-buffer,
    point indices and images, on the CPU workspace path and the CUDA-style one (fresh buffers). The second
    half of each cloud repeats the first, so depth ties between passes must still go to the smaller index."""
    import clip2point_hf.rendering_clip2point as module

    if fresh_buffers:
        original = module._Workspace.__init__
        monkeypatch.setattr(
            module._Workspace, "__init__", lambda self, device, reuse=True: original(self, device, False)
        )
    half = random_clouds(3, 2500, seed=21)
    pts = torch.cat([half, half], dim=1)
    whole = DepthRenderer(image_size=64, point_chunk_size=10**9)
    expected = whole.rasterize(pts)
    assert (expected.point_index < 2500).all()  # ties resolved to the first copy
    for renderer in (
        DepthRenderer(image_size=64, point_chunk_size=777),
        DepthRenderer(image_size=64, point_chunk_size=777, chunk_size=1),
    ):
        assert renderer._plan(pts, 10)[1] == 777
        got = renderer.rasterize(pts)
        torch.testing.assert_close(got.point_index, expected.point_index, rtol=0, atol=0)
        torch.testing.assert_close(got.depth, expected.depth, rtol=0, atol=0)
        torch.testing.assert_close(renderer.render(pts), whole.render(pts), rtol=0, atol=0)
        torch.testing.assert_close(
            renderer.render_intensity(pts), whole.render_intensity(pts), rtol=0, atol=0
        )


def test_large_cloud_default_plan_bounds_the_candidates():
    """By default a 40k-point cloud is split into passes (same images as one pass); a differentiable call
    is not split and gets the one-pass gradient."""
    big = random_clouds(1, 40_000, seed=22)
    renderer, whole = DepthRenderer(), DepthRenderer(point_chunk_size=10**9)
    chunk, step, _ = renderer._plan(big, 10)
    assert chunk == 1 and step * 10 * 25 <= 2**21 < 40_000 * 10 * 25
    torch.testing.assert_close(renderer.render(big), whole.render(big), rtol=0, atol=0)
    small = random_clouds(1, 300, seed=23).requires_grad_(True)
    split = DepthRenderer(image_size=32, point_chunk_size=7)
    assert split._plan(small, 10)[1] == 300
    (grad,) = torch.autograd.grad(split.render(small).sum(), small)
    (ref,) = torch.autograd.grad(DepthRenderer(image_size=32).render(small).sum(), small)
    torch.testing.assert_close(grad, ref, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    pts = random_clouds(4, 1024, seed=14)
    renderer = DepthRenderer()
    cpu_raster, cpu_image = renderer.rasterize(pts), renderer.render(pts)
    gpu = pts.cuda()
    raster = renderer.rasterize(gpu)
    assert raster.depth.is_cuda and raster.point_index.is_cuda
    # float rounding of the projection may differ by an ulp on the GPU: compare up to a few pixels
    assert (raster.point_index.cpu() != cpu_raster.point_index).float().mean() < 1e-4
    same = raster.point_index.cpu() == cpu_raster.point_index
    torch.testing.assert_close(raster.depth.cpu()[same], cpu_raster.depth[same], atol=1e-5, rtol=0)
    image = renderer.render(gpu, distances=torch.ones(4, 10, device="cuda"))
    assert image.is_cuda and torch.isfinite(image).all()
    assert (image.cpu() - cpu_image).abs().gt(1e-4).float().mean() < 1e-4


def test_camera_basis_puts_plain_numbers_on_the_angles_device():
    """A Python distance must follow the angles' device (on CUDA a CPU scalar broke the render); the meta
    device shows the same mismatch on a CPU-only machine."""
    angles = torch.tensor([0.0, 90.0, 225.0], device="meta")
    basis = camera_basis(angles, angles, 1.0)
    assert basis.centre.device.type == "meta" and basis.x_axis.shape == (3, 3)
