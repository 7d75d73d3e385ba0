"""The views picture: each cell is the feature extractor's grey render of that view."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from clip2point_apps.visualization import (
    CONFUSION_MATRIX_LEGEND,
    save_confusion_matrix_image,
    save_views_image,
)
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


def _title_band_is_whole(image: Image.Image, band_height: int, lines: list[str], background: int) -> None:
    """Each title line is narrower than the picture (measured with the font it is drawn in), something is drawn in
    the band, and the band's right margin is untouched (no text runs off the edge)."""
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for line in lines:
        assert draw.textlength(line, font=font) + 8 < image.width, (line, image.width)
    band = np.asarray(image.convert("L"))[:band_height]
    assert (band < background).any()  # the title is there
    assert (band[:, -4:] == background).all()  # and ends before the edge


def test_confusion_matrix_title_fits_however_few_the_classes(tmp_path):
    title = "fine-tuned test: OA 97.5%, mAcc 96.1% on a dataset with a long name"
    path = tmp_path / "cm.png"
    save_confusion_matrix_image([[3, 1], [0, 4]], ["a", "b"], path, title=title)
    image = Image.open(path)
    _title_band_is_whole(image, 6 + 2 * 14, [title, CONFUSION_MATRIX_LEGEND], background=255)
    untitled = tmp_path / "plain.png"
    save_confusion_matrix_image([[3, 1], [0, 4]], ["a", "b"], untitled)
    assert Image.open(untitled).width < image.width  # two classes alone are narrower than the title


def test_render_pictures_are_titled_with_file_views_and_up_axis(tmp_path, capsys):
    """`clip2point render` draws the picture `save_views_image` draws with that title, and the title fits."""
    from clip2point_apps.cli import main
    from clip2point_hf.point_files import read_point_cloud

    cloud = tmp_path / "cloud.npy"
    np.save(cloud, np.random.default_rng(3).normal(size=(500, 3)).astype("float32"))
    out = tmp_path / "views.png"
    assert (
        main(["render", str(cloud), "--views", "6", "--up_axis", "-z", "--num_points", "128", "-o", str(out)])
        == 0
    )
    title = "cloud.npy: 6 views (6), up axis -z"
    front_end = CLIP2PointFeatureExtractor(num_points=128, up_axis="-z", views="reference6")
    expected = save_views_image(
        front_end, read_point_cloud(cloud, seed=0), tmp_path / "expected.png", title=title
    )
    drawn = Image.open(out)
    assert np.array_equal(np.asarray(drawn), np.asarray(expected))
    _title_band_is_whole(drawn, 16, [title], background=160)
    assert "up axis -z" in capsys.readouterr().out
