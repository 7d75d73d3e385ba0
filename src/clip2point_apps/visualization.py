"""Pictures for people: a grid of a cloud's depth views, as the demo, ``clip2point render`` and the web page draw it.

Application layer: it uses the point-cloud front end (``CLIP2PointFeatureExtractor``) but is not part of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor
from clip2point_hf.rendering_clip2point import resolve_views, view_name

__all__ = ["save_views_image"]


def _is_batch(x: Any) -> bool:
    """A single cloud is a 2-D array; a batch is a 3-D array or a list of 2-D clouds (the first is drawn)."""
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.ndim == 3
    return isinstance(x, (list, tuple)) and len(x) > 0 and np.ndim(x[0]) == 2


def save_views_image(
    feature_extractor: CLIP2PointFeatureExtractor,
    point_cloud: Any,
    path: str | os.PathLike,
    *,
    views: str | Sequence | None = None,
    columns: int | None = None,
    labels: bool = True,
    title: str | None = None,
) -> Image.Image:
    """Write a PNG grid of a cloud's depth views as ``feature_extractor`` renders them (grey before mean/std: near
    is dark, background white), each cell titled with where its camera stands (``view_name``: "front", "top",
    ...), and ``title`` (e.g. the object and the answer) above the grid. Of a batch, the first cloud is drawn.
    Returns the PIL image."""
    clouds = point_cloud if _is_batch(point_cloud) else [point_cloud]
    points = feature_extractor.prepare_point_clouds(clouds)
    views = feature_extractor.views if views is None else views
    grey = feature_extractor.renderer.render_intensity(points[:1], views)[0]  # (V, S, S)
    view_list = resolve_views(views).tolist()
    v, s = grey.shape[0], grey.shape[-1]
    cols = columns or min(v, 5)
    rows = -(-v // cols)
    label_h = 14 if labels else 0
    pad = 4
    top = 16 if title else 0
    sheet = Image.new("L", (cols * (s + pad) + pad, top + rows * (s + pad + label_h) + pad), color=160)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad + 2, 3), title, fill=0)
    cells = (grey.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    for idx in range(v):
        r, c = divmod(idx, cols)
        x0 = pad + c * (s + pad)
        y0 = top + pad + r * (s + pad + label_h)
        sheet.paste(Image.fromarray(cells[idx]), (x0, y0 + label_h))
        if labels:
            draw.text((x0 + 2, y0 + 1), view_name(*view_list[idx]), fill=0)
    sheet.save(os.fspath(path))
    return sheet
