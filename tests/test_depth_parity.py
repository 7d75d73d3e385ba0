"""Depth -> intensity parity with the reference's `Renderer.norm`, against a per-pixel transcription."""

from __future__ import annotations

import math

import pytest
import torch

from clip2point_hf.rendering_clip2point import DepthRenderer


def reference_norm(depth: torch.Tensor) -> torch.Tensor:
    """`Renderer.norm` of the authors' render/render.py, one pixel at a time, for one (S, S) view:
    z_max = max over the image; background (depth <= 0) set to 1; z_min = min over the image;
    foreground = (z - z_min) / z_max * 200/255; background = 1."""
    rows, cols = depth.shape
    z_max = -math.inf
    for i in range(rows):
        for j in range(cols):
            z_max = max(z_max, float(depth[i, j]))
    with_background_at_1 = [
        [float(depth[i, j]) if depth[i, j] > 0 else 1.0 for j in range(cols)] for i in range(rows)
    ]
    z_min = math.inf
    for i in range(rows):
        for j in range(cols):
            z_min = min(z_min, with_background_at_1[i][j])
    out = torch.ones(rows, cols, dtype=torch.float64)
    for i in range(rows):
        for j in range(cols):
            if depth[i, j] > 0:
                out[i, j] = (float(depth[i, j]) - z_min) / z_max * 200.0 / 255.0
    return out


def views(size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    full = 1.2 + 0.6 * torch.rand(size, size, generator=g)  # every pixel covered, all depths above 1
    partial = full.clone()
    partial[:3, :] = 0.0  # background rows
    near_partial = 0.5 + torch.rand(size, size, generator=g)
    near_partial[::2, ::3] = 0.0  # background, and foreground below 1
    near_full = 0.4 + 0.3 * torch.rand(size, size, generator=g)  # covered, all below 1
    return torch.stack([full, partial, near_partial, near_full])[None]  # (1, 4, S, S)


def test_parity_intensity_matches_the_reference_rule_with_and_without_background():
    depth = views()
    grey = DepthRenderer(image_size=8).depth_to_intensity(depth)
    for v in range(depth.shape[1]):
        torch.testing.assert_close(grey[0, v].double(), reference_norm(depth[0, v]), atol=1e-6, rtol=0)
    # The fully covered view with depths above 1: z_min is the plain foreground minimum, so the nearest
    # pixel is black (a min(fg, 1) rule would leave it grey).
    assert grey[0, 0].min().item() == pytest.approx(0.0, abs=1e-7)
    assert grey[0, 1].min().item() > 0.05  # the same depths with background: z_min = 1


def test_full_coverage_render_matches_the_reference_rule():
    """A render whose every pixel is covered (large points over a dense grid) goes through the fast
    path; its grey image must equal the transcription applied to its own rasterised depth."""
    s = 16
    lin = torch.linspace(-1, 1, 24)
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    wave = 0.3 * torch.sin(3 * x) * torch.cos(2 * y) - 0.5  # view depths 1.2 to 1.8 from the front
    points = torch.stack([x, y, wave], dim=-1).reshape(1, -1, 3)
    renderer = DepthRenderer(image_size=s, point_radius=0.2)
    views_ = [(0.0, 0.0, 1.0), (90.0, 0.0, 1.0)]  # front view: fully covered; top view: a thin band
    depth = renderer.rasterize(points, views_).depth
    assert (depth[0, 0] > 1).all() and not (depth[0, 1] > 0).all()
    grey = renderer.render_intensity(points, views_)
    for v in range(2):
        torch.testing.assert_close(grey[0, v].double(), reference_norm(depth[0, v]), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        renderer.render(points, views_), renderer.depth_to_image(depth), atol=1e-5, rtol=0
    )
