"""The views picture: each cell is the feature extractor's grey render of that view."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from clip2point_apps.visualization import save_views_image
from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor


def test_save_views_image(tmp_path):
    front_end = CLIP2PointFeatureExtractor(
        num_points=256, image_size=64, views=[(0, 0), (90, 0), (0, 90, 1.2)]
    )
    cloud = np.random.default_rng(13).normal(size=(2000, 3)).astype("float32")
    path = tmp_path / "views.png"
    sheet = save_views_image(front_end, cloud, path)
    img = Image.open(path)
    assert img.size == sheet.size and img.mode == "L"
    assert img.size == (3 * (64 + 4) + 4, 1 * (64 + 4 + 14) + 4)  # 3 views in a row, labelled
    arr = np.asarray(img)
    cell = arr[4 + 14 : 4 + 14 + 64, 4 : 4 + 64]  # the first view, below its label
    grey = front_end.renderer.render_intensity(front_end.prepare_point_clouds([cloud]), front_end.views)[0, 0]
    np.testing.assert_array_equal(cell, (grey * 255).round().to(torch.uint8).numpy())
    assert (arr[:4] == 160).all()  # the margin
    # A batch, as an array or as a list of clouds, draws its first cloud.
    other = np.random.default_rng(14).normal(size=(2000, 3)).astype("float32")
    for batch in ([cloud, other], np.stack([cloud, other])):
        again = save_views_image(front_end, batch, tmp_path / "batch.png")
        assert np.array_equal(np.asarray(again), np.asarray(sheet))
