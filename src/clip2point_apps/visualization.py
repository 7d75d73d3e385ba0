"""Pictures for people: a grid of a cloud's depth views (the demo, ``clip2point render``, the web page) and a
confusion matrix (the evaluation, the fine-tuning script).

Application layer: it uses the point-cloud front end (``CLIP2PointFeatureExtractor``) but is not part of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor
from clip2point_hf.rendering_clip2point import resolve_views, view_name

__all__ = ["CONFUSION_MATRIX_LEGEND", "save_confusion_matrix_image", "save_views_image"]

#: The second title line of a confusion matrix picture.
CONFUSION_MATRIX_LEGEND = "rows: true class, columns: predicted class"
#: Height of one line of Pillow's default font, with its spacing.
_LINE_HEIGHT = 14


def _text_width(lines: Sequence[str], font) -> int:
    """Pixels the widest of ``lines`` takes in ``font`` (a picture is made at least this wide, plus margins)."""
    return int(np.ceil(max((font.getlength(line) for line in lines), default=0)))


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
    font = ImageFont.load_default()
    width = max(cols * (s + pad) + pad, _text_width([title or ""], font) + 2 * (pad + 2))  # the whole title
    sheet = Image.new("L", (width, top + rows * (s + pad + label_h) + pad), color=160)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad + 2, 3), title, fill=0, font=font)
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


def save_confusion_matrix_image(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | os.PathLike, title: str = ""
) -> None:
    """A PNG of the confusion matrix (rows: true class, columns: predicted), row-normalised shading, counts
    written in the cells; ``title`` and the legend above it, on two lines, the picture wide enough for both.
    Drawn with Pillow (no matplotlib needed)."""
    cm = np.asarray(confusion, dtype=np.int64)
    k = cm.shape[0]
    font = ImageFont.load_default()
    cell = 22 if k <= 40 else 12
    label_w = 8 + 7 * max((len(n) for n in class_names), default=1)
    heading = [title, CONFUSION_MATRIX_LEGEND] if title else []
    top = label_w + (8 + _LINE_HEIGHT * len(heading) + 4 if heading else 8)
    width = max(label_w + k * cell + 10, _text_width(heading, font) + 16)
    height = top + k * cell + 10
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(heading):
        draw.text((8, 6 + i * _LINE_HEIGHT), line, fill="black", font=font)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    for i in range(k):
        for j in range(k):
            x0, y0 = label_w + j * cell, top + i * cell
            level = int(255 - 215 * share[i, j])
            colour = (level, level, 255) if i == j else (255, level, level)
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(225, 225, 225))
            if cm[i, j] and cell >= 20:
                draw.text((x0 + 3, y0 + 5), str(cm[i, j]), fill="black", font=font)
    for i, name in enumerate(class_names):
        draw.text((4, top + i * cell + (cell - 10) // 2), str(name), fill="black", font=font)
        column = Image.new("RGB", (label_w, cell), "white")
        ImageDraw.Draw(column).text((4, (cell - 10) // 2), str(name), fill="black", font=font)
        column = column.rotate(90, expand=True)
        image.paste(column, (label_w + i * cell, top - label_w))
    image.save(path)
