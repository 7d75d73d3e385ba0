"""CLIP2PointFeatureExtractor: input forms, sampling, errors, call-time options, save/load, Auto classes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoProcessor

from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor
from clip2point_hf.points_clip2point import convert_up_axis, farthest_point_sample, normalize_point_cloud
from clip2point_hf.rendering_clip2point import VIEW_PRESETS, DepthRenderer


def clouds(b=2, n=1024, c=3, seed=0):
    return np.random.default_rng(seed).normal(size=(b, n, c)).astype("float32")


@pytest.fixture(scope="module")
def small():
    """A cheap processor (64 x 64, 3 views, 256 points) for the behavioural tests."""
    return CLIP2PointFeatureExtractor(num_points=256, image_size=64, views=[(0, 0), (90, 0), (0, 90, 1.2)])


def test_defaults_are_the_reference_settings():
    p = CLIP2PointFeatureExtractor()
    assert (p.num_points, p.views, p.image_size, p.point_radius, p.depth_mode) == (
        1024,
        "reference10",
        224,
        0.02,
        "parity",
    )
    assert p.num_views == 10 and not p.densify
    x = clouds(2, 1024)
    batch = p(x)
    assert set(batch) == {"pixel_values"}
    assert (
        batch["pixel_values"].shape == (2, 10, 3, 224, 224) and batch["pixel_values"].dtype == torch.float32
    )
    # 1024 points in: no sampling, just normalisation, then the reference render
    expected = DepthRenderer().render(
        normalize_point_cloud(torch.from_numpy(x))[0], VIEW_PRESETS["reference10"]
    )
    torch.testing.assert_close(batch["pixel_values"], expected, rtol=0, atol=0)


def test_input_forms_agree(small):
    x = clouds(3, 256, 6, seed=1)  # extra columns (normals) are ignored
    ref = small(x[..., :3])["pixel_values"]
    torch.testing.assert_close(small(x)["pixel_values"], ref, rtol=0, atol=0)
    torch.testing.assert_close(small(torch.from_numpy(x))["pixel_values"], ref, rtol=0, atol=0)
    torch.testing.assert_close(small(list(x))["pixel_values"], ref, rtol=0, atol=0)
    torch.testing.assert_close(small([c.tolist() for c in x])["pixel_values"], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(small(x[1])["pixel_values"], ref[1:2], rtol=0, atol=0)  # one (N, C) cloud
    torch.testing.assert_close(small(x.astype("float64"))["pixel_values"], ref, atol=1e-5, rtol=0)
    half = small(x.astype("float16"))["pixel_values"]
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    as_np = small(x, return_tensors="np")["pixel_values"]
    assert isinstance(as_np, np.ndarray) and np.array_equal(as_np, ref.numpy())


def test_list_of_clouds_with_different_sizes(small):
    x = clouds(1, 3000, seed=2)[0]
    y = clouds(1, 100, seed=3)[0]  # fewer than num_points
    z = clouds(1, 256, seed=4)[0]
    batch = small([x, y, z])["pixel_values"]
    assert batch.shape == (3, 3, 3, 64, 64)
    for i, c in enumerate((x, y, z)):
        torch.testing.assert_close(batch[i : i + 1], small([c])["pixel_values"], rtol=0, atol=0)


def test_small_clouds_are_padded_without_changing_the_render(small):
    y = torch.from_numpy(clouds(1, 100, seed=5)[0])
    prepared = small.prepare_point_clouds([y])
    assert prepared.shape == (1, 256, 3)
    normed = normalize_point_cloud(y)[0]
    # every original point is kept, the rest are repeats
    assert torch.equal(torch.unique(prepared[0], dim=0), torch.unique(normed, dim=0))
    direct = small.renderer.render(normed[None], small.views)
    torch.testing.assert_close(small([y])["pixel_values"], direct, rtol=0, atol=0)


def test_random_sampling_is_seeded(small):
    x = clouds(2, 2000, seed=6)
    a = small.prepare_point_clouds(x)
    torch.testing.assert_close(small.prepare_point_clouds(x), a, rtol=0, atol=0)
    other = CLIP2PointFeatureExtractor(num_points=256, image_size=64, seed=1).prepare_point_clouds(x)
    assert not torch.equal(other, a)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(
        small.prepare_point_clouds(x, generator=g1), small.prepare_point_clouds(x, generator=g2)
    )
    # documented algorithm: per cloud, in order, k indices without replacement from one generator
    # seeded with `seed`; normalisation after sampling
    g = torch.Generator().manual_seed(0)
    src = torch.from_numpy(x)
    picked = torch.stack([src[b, torch.randperm(2000, generator=g)[:256]] for b in range(2)])
    torch.testing.assert_close(a, normalize_point_cloud(picked)[0], rtol=0, atol=0)


def test_fps_sampling_matches_farthest_point_sample():
    p = CLIP2PointFeatureExtractor(num_points=32, image_size=32, sampling="fps")
    x = torch.from_numpy(clouds(2, 500, seed=7))
    idx = farthest_point_sample(x, 32, start_index=0)
    expected = normalize_point_cloud(torch.stack([x[b, idx[b]] for b in range(2)]))[0]
    torch.testing.assert_close(p.prepare_point_clouds(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(p.prepare_point_clouds(list(x)), expected, rtol=0, atol=0)


def test_cloud_far_larger_than_num_points():
    big = clouds(1, 300_000, seed=8)[0]
    for sampling in ("random", "fps"):
        p = CLIP2PointFeatureExtractor(num_points=64, image_size=32, sampling=sampling, max_fps_points=2048)
        out = p([big])["pixel_values"]
        assert out.shape == (1, 10, 3, 32, 32) and torch.isfinite(out).all()
        # documented: fps first reduces to max_fps_points random points, then runs FPS on them
        assert p.prepare_point_clouds([big]).shape == (1, 64, 3)


def test_up_axis_option(small):
    x = torch.from_numpy(clouds(2, 256, seed=9))
    z_up = CLIP2PointFeatureExtractor(num_points=256, image_size=64, views=small.views, up_axis="z")
    torch.testing.assert_close(
        z_up(x)["pixel_values"], small(convert_up_axis(x, "z"))["pixel_values"], rtol=0, atol=0
    )
    assert not torch.equal(z_up(x)["pixel_values"], small(x)["pixel_values"])


def test_views_and_distances_per_call(small):
    x = clouds(2, 256, seed=10)
    six = small(x, views="reference6")["pixel_values"]
    assert six.shape == (2, 6, 3, 64, 64)
    zoom = small(x, distances=torch.tensor([[1.0, 1.0, 1.2], [2.0, 2.0, 2.0]]))["pixel_values"]
    plain = small(x)["pixel_values"]
    torch.testing.assert_close(zoom[0], plain[0], rtol=0, atol=0)  # the same distances as the views
    background = small.renderer._normalise_channels(torch.ones(1, 1, 64, 64))[0, 0]
    fg_zoomed = (zoom[1] != background).any(1).sum()
    fg_plain = (plain[1] != background).any(1).sum()
    assert fg_zoomed < fg_plain  # distance 2: the object is half the size


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (np.zeros((2, 10, 2), "float32"), ValueError, r"`point_clouds` has 2 columns"),
        (np.zeros((10,), "float32"), ValueError, r"`point_clouds` must have shape"),
        (np.zeros((1, 2, 10, 3), "float32"), ValueError, r"`point_clouds` must have shape"),
        (np.zeros((2, 10, 3), "int64"), TypeError, r"`point_clouds` has dtype torch.int64"),
        (np.zeros((2, 0, 3), "float32"), ValueError, r"`point_clouds` is empty"),
        ([np.zeros((5, 3)), np.zeros((0, 3))], ValueError, r"`point_clouds\[1\]` is empty"),
        ([np.zeros((5, 3)), np.zeros((5, 3), "int32")], TypeError, r"`point_clouds\[1\]` has dtype"),
        ([np.zeros((5, 3)), np.zeros((5, 3, 1))], ValueError, r"`point_clouds\[1\]` must have shape"),
        ([np.zeros((5, 3)), "chair"], TypeError, r"`point_clouds\[1\]` must be"),
        ([], ValueError, r"empty list"),
        ("cloud.npy", TypeError, r"`point_clouds` must be"),
    ],
)
def test_bad_inputs_name_the_argument(small, value, error, match):
    with pytest.raises(error, match=match):
        small(value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_coordinates_are_rejected(small, bad):
    x = clouds(3, 256)
    x[1, 17, 2] = bad
    with pytest.raises(ValueError, match=r"`point_clouds\[1\]` contains NaN or Inf"):
        small(x)
    with pytest.raises(ValueError, match=r"`point_clouds\[1\]` contains NaN or Inf"):
        small(list(x))
    # opting out of the check: the bad points are dropped by the renderer, never NaN pixels
    lax = CLIP2PointFeatureExtractor(num_points=256, image_size=64, views=small.views, validate_values=False)
    x[1, :, :] = clouds(1, 256)[0]
    x[1, 17, 2] = bad
    assert torch.isfinite(lax(x)["pixel_values"]).all()


def test_single_point_and_coincident_points():
    p = CLIP2PointFeatureExtractor(num_points=16, image_size=65)  # odd size: pixel 32 is centred on the axis
    for cloud in (np.array([[0.3, -1.0, 2.0]], "float32"), np.full((500, 3), 7.0, "float32")):
        pixels = p([cloud])["pixel_values"]
        assert torch.isfinite(pixels).all()
        grey = p.renderer.render_intensity(p.prepare_point_clouds([cloud]), p.views)
        # documented: the cloud normalises to all zeros -> one dark dot at the centre of every view
        assert (grey[0, :, 32, 32] == 0).all()
        assert (grey[0].flatten(1).sum(1) == 65 * 65 - 1).all()


def test_constructor_validation():
    for kwargs, match in [
        ({"num_points": 0}, "num_points"),
        ({"sampling": "poisson"}, "sampling"),
        ({"up_axis": "w"}, "up_axis"),
        ({"views": "top"}, "preset"),
        ({"views": [(0, 0, -1)]}, "distance"),
        ({"depth_mode": "log"}, "depth_mode"),
        ({"seed": 1.5}, "seed"),
        ({"max_fps_points": 10}, "max_fps_points"),
    ]:
        with pytest.raises(ValueError, match=match):
            CLIP2PointFeatureExtractor(**kwargs)
    with pytest.raises(ValueError, match="point_clouds"):
        CLIP2PointFeatureExtractor()(None)
    with pytest.raises(TypeError, match="num_point"):
        CLIP2PointFeatureExtractor(num_point=2048)  # a misspelt setting is refused, not stored


# ---------------------------------------------------------------------------------------------
# Saving, loading, Auto classes, remote code
# ---------------------------------------------------------------------------------------------

SETTINGS = {
    "num_points": 128,
    "sampling": "fps",
    "seed": 3,
    "up_axis": "z",
    "views": [[10.0, 20.0, 1.0], [-30.0, 45.0, 1.5]],
    "image_size": 48,
    "point_radius": 0.05,
    "depth_mode": "minmax",
    "densify": True,
    "clip_free_zoom": False,
    "depth_mean": [0.5, 0.5, 0.5],
    "depth_std": [0.25, 0.25, 0.25],
    "max_fps_points": 4096,
    "validate_values": True,
}


def settings(front_end: CLIP2PointFeatureExtractor) -> dict:
    """The saved settings (`auto_map` is added on save when the class is registered for remote code)."""
    return {k: v for k, v in front_end.to_dict().items() if k != "auto_map"}


def test_save_and_load_round_trip_without_a_tokenizer(tmp_path):
    p = CLIP2PointFeatureExtractor(**SETTINGS)
    p.save_pretrained(tmp_path)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".json")) == ["preprocessor_config.json"]
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert {k: saved[k] for k in SETTINGS} == SETTINGS
    assert saved["feature_extractor_type"] == "CLIP2PointFeatureExtractor" and "_renderer" not in saved
    x = clouds(2, 500, seed=11)
    expected = p(x)["pixel_values"]
    for loaded in (
        CLIP2PointFeatureExtractor.from_pretrained(tmp_path),
        AutoFeatureExtractor.from_pretrained(tmp_path),
        AutoProcessor.from_pretrained(tmp_path, trust_remote_code=False),  # a folder without a tokenizer
    ):
        assert type(loaded) is CLIP2PointFeatureExtractor and settings(loaded) == settings(p)
        torch.testing.assert_close(loaded(x)["pixel_values"], expected, rtol=0, atol=0)


def test_a_changed_render_setting_rebuilds_the_renderer():
    p = CLIP2PointFeatureExtractor(num_points=64, image_size=32, views="reference6")
    x = clouds(1, 100, seed=3)
    p.image_size = 48
    assert p.renderer.image_size == 48 and p(x)["pixel_values"].shape == (1, 6, 3, 48, 48)
    loaded = CLIP2PointFeatureExtractor.from_dict({**p.to_dict(), "image_size": 16})
    assert loaded(x)["pixel_values"].shape[-1] == 16


@pytest.mark.parametrize("views", ["reference6", [[0, 0], [90, 0, 1.2]], [[10.5, -20.0, 1.0]]])
def test_json_round_trip_keeps_what_the_user_set(tmp_path, views):
    """A preset name stays a name and an explicit list stays that list (no distance added, no floats made)."""
    p = CLIP2PointFeatureExtractor(num_points=64, image_size=32, views=views)
    assert p.views == views and json.loads(p.to_json_string())["views"] == views
    p.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["views"] == views
    assert CLIP2PointFeatureExtractor.from_pretrained(tmp_path).views == views


def test_from_pretrained_of_an_empty_folder_fails(tmp_path):
    with pytest.raises(OSError, match=r"preprocessor_config\.json"):
        CLIP2PointFeatureExtractor.from_pretrained(tmp_path)
