"""CLIP2PointProcessor: input forms, sampling, errors, tokenizer, save/load, AutoProcessor, remote code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from clip2point_hf.configuration_clip2point import CLIP2PointConfig
from clip2point_hf.points_clip2point import convert_up_axis, farthest_point_sample, normalize_point_cloud
from clip2point_hf.processing_clip2point import CLIP2PointProcessor
from clip2point_hf.rendering_clip2point import VIEW_PRESETS, DepthRenderer
from conftest import make_tiny_tokenizer


def clouds(b=2, n=1024, c=3, seed=0):
    return np.random.default_rng(seed).normal(size=(b, n, c)).astype("float32")


@pytest.fixture(scope="module")
def small():
    """A cheap processor (64 x 64, 3 views, 256 points) for the behavioural tests."""
    return CLIP2PointProcessor(num_points=256, image_size=64, views=[(0, 0), (90, 0), (0, 90, 1.2)])


def test_defaults_are_the_reference_settings():
    p = CLIP2PointProcessor()
    assert (p.num_points, p.views, p.image_size, p.point_radius, p.depth_mode) == (
        1024,
        "reference10",
        224,
        0.02,
        "parity",
    )
    assert p.tokenizer is None and p.num_views == 10 and not p.densify
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
    other = CLIP2PointProcessor(num_points=256, image_size=64, seed=1).prepare_point_clouds(x)
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
    p = CLIP2PointProcessor(num_points=32, image_size=32, sampling="fps")
    x = torch.from_numpy(clouds(2, 500, seed=7))
    idx = farthest_point_sample(x, 32, start_index=0)
    expected = normalize_point_cloud(torch.stack([x[b, idx[b]] for b in range(2)]))[0]
    torch.testing.assert_close(p.prepare_point_clouds(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(p.prepare_point_clouds(list(x)), expected, rtol=0, atol=0)


def test_cloud_far_larger_than_num_points():
    big = clouds(1, 300_000, seed=8)[0]
    for sampling in ("random", "fps"):
        p = CLIP2PointProcessor(num_points=64, image_size=32, sampling=sampling, max_fps_points=2048)
        out = p([big])["pixel_values"]
        assert out.shape == (1, 10, 3, 32, 32) and torch.isfinite(out).all()
        # documented: fps first reduces to max_fps_points random points, then runs FPS on them
        assert p.prepare_point_clouds([big]).shape == (1, 64, 3)


def test_up_axis_option(small):
    x = torch.from_numpy(clouds(2, 256, seed=9))
    z_up = CLIP2PointProcessor(num_points=256, image_size=64, views=small.views, up_axis="z")
    torch.testing.assert_close(
        z_up(x)["pixel_values"], small(convert_up_axis(x, "z"))["pixel_values"], rtol=0, atol=0
    )
    assert not torch.equal(z_up(x)["pixel_values"], small(x)["pixel_values"])


def test_views_and_distances_per_call(small):
    x = clouds(2, 256, seed=10)
    six = small(x, render_views="reference6")["pixel_values"]
    assert six.shape == (2, 6, 3, 64, 64)
    zoom = small(x, distances=torch.tensor([[1.0, 1.0, 1.2], [2.0, 2.0, 2.0]]))["pixel_values"]
    plain = small(x)["pixel_values"]
    torch.testing.assert_close(zoom[0], plain[0], rtol=0, atol=0)  # the same distances as the views
    background = small.renderer._normalise_channels(torch.ones(1, 1, 64, 64))[0, 0]
    fg_zoomed = (zoom[1] != background).any(1).sum()
    fg_plain = (plain[1] != background).any(1).sum()
    assert fg_zoomed < fg_plain  # distance 2: the object is half the size


def test_text_needs_the_tokenizer(small):
    with pytest.raises(ValueError, match="no tokenizer"):
        small(text=["image of a chair"])
    tok = make_tiny_tokenizer()
    p = CLIP2PointProcessor(tokenizer=tok, num_points=256, image_size=64, views=small.views)
    batch = p(clouds(2, 256), text=["image of a chair", "a lamp"], device="cpu")
    expected = tok(["image of a chair", "a lamp"], padding=True, return_tensors="pt")
    torch.testing.assert_close(batch["input_ids"], expected["input_ids"])
    torch.testing.assert_close(batch["attention_mask"], expected["attention_mask"])
    assert batch["pixel_values"].shape == (2, 3, 3, 64, 64)
    only_text = p(text="image of a cup")
    assert set(only_text) == {"input_ids", "attention_mask"}
    assert p.model_input_names == ["pixel_values", "input_ids", "attention_mask"]


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
    lax = CLIP2PointProcessor(num_points=256, image_size=64, views=small.views, validate_values=False)
    x[1, :, :] = clouds(1, 256)[0]
    x[1, 17, 2] = bad
    assert torch.isfinite(lax(x)["pixel_values"]).all()


def test_single_point_and_coincident_points():
    p = CLIP2PointProcessor(num_points=16, image_size=65)  # odd size: pixel 32 is centred on the axis
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
            CLIP2PointProcessor(**kwargs)
    with pytest.raises(ValueError, match="point_clouds"):
        CLIP2PointProcessor()(None)


# ---------------------------------------------------------------------------------------------
# Saving, loading, AutoProcessor, remote code
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


def settings(processor) -> dict:
    """The saved settings (`auto_map` is added on save when the class is registered for remote code)."""
    return {k: v for k, v in processor.to_dict().items() if k != "auto_map"}


@pytest.mark.parametrize("with_tokenizer", [False, True])
def test_save_and_load_round_trip(tmp_path, with_tokenizer):
    tok = make_tiny_tokenizer() if with_tokenizer else None
    p = CLIP2PointProcessor(tokenizer=tok, **SETTINGS)
    p.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert {k: saved[k] for k in SETTINGS} == SETTINGS
    q = CLIP2PointProcessor.from_pretrained(tmp_path)
    assert settings(q) == settings(p)
    assert (q.tokenizer is None) == (not with_tokenizer)
    x = clouds(2, 500, seed=11)
    text = ["image of a chair", "a lamp"] if with_tokenizer else None
    a, b = p(x, text=text), q(x, text=text)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("views", ["reference6", [[0, 0], [90, 0, 1.2]], [[10.5, -20.0, 1.0]]])
def test_json_round_trip_keeps_what_the_user_set(tmp_path, views):
    """A preset name stays a name and an explicit list stays that list (no distance added, no floats made)."""
    p = CLIP2PointProcessor(num_points=64, image_size=32, views=views)
    assert p.views == views and json.loads(p.to_json_string())["views"] == views
    p.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["views"] == views
    assert CLIP2PointProcessor.from_pretrained(tmp_path).views == views


def test_processor_config_with_the_old_mean_std_names_loads(tmp_path):
    """Files saved before `image_mean`/`image_std` were renamed `depth_mean`/`depth_std` load unchanged."""
    new = CLIP2PointProcessor(num_points=64, image_size=32, depth_mean=[0.5, 0.4, 0.3], depth_std=[0.2] * 3)
    new.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert "image_mean" not in saved and saved["depth_mean"] == [0.5, 0.4, 0.3]
    saved["image_mean"], saved["image_std"] = saved.pop("depth_mean"), saved.pop("depth_std")
    (tmp_path / "processor_config.json").write_text(json.dumps(saved))
    old = CLIP2PointProcessor.from_pretrained(tmp_path)
    assert old.depth_mean == [0.5, 0.4, 0.3] and old.depth_std == [0.2] * 3
    x = clouds(1, 100, seed=4)
    torch.testing.assert_close(old(x)["pixel_values"], new(x)["pixel_values"], rtol=0, atol=0)


def _explicit_arguments(method) -> set[str]:
    import inspect

    return {
        name
        for name, param in inspect.signature(method).parameters.items()
        if name != "self" and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
    }


def test_kwargs_follow_transformers_processor_rules():
    """The rules transformers' own processor tests check (tests/test_processing_common.py, 5.24)."""
    import inspect
    from typing import is_typeddict

    from clip2point_hf.processing_clip2point import CLIP2PointProcessorKwargs

    cls = CLIP2PointProcessor
    assert cls.valid_processor_kwargs is CLIP2PointProcessorKwargs
    kwarg_names = set()
    for name, annotation in CLIP2PointProcessorKwargs.__annotations__.items():
        kwarg_names.add(name)
        if is_typeddict(annotation):  # text_kwargs, images_kwargs...: their keys can be passed flat
            kwarg_names |= set(annotation.__annotations__)
    init_args, call_args = _explicit_arguments(cls.__init__), _explicit_arguments(cls.__call__)
    assert not {name for name in init_args if hasattr(cls, name)}  # no default both in __init__ and the class
    assert not init_args & kwarg_names  # a saved setting is not also a call option (views, image_mean...)
    assert not call_args & kwarg_names
    processor = CLIP2PointProcessor(tokenizer=make_tiny_tokenizer())
    assert not {name for name in call_args if hasattr(processor, name)}
    parameters = inspect.signature(cls.__call__).parameters
    assert all(parameters[name].default in (None, inspect.Parameter.empty) for name in call_args)


def test_call_options_are_merged_like_transformers_kwargs():
    tok = make_tiny_tokenizer()
    p = CLIP2PointProcessor(tokenizer=tok, num_points=64, image_size=32, views="reference6")
    x, text = clouds(2, 100, seed=5), ["image of a chair", "a lamp"]
    default = p(x, text=text)
    assert isinstance(default["pixel_values"], torch.Tensor) and isinstance(
        default["input_ids"], torch.Tensor
    )
    torch.testing.assert_close(
        default["input_ids"], tok(text, padding=True, return_tensors="pt")["input_ids"]
    )
    flat = p(x, text=text, padding="max_length", max_length=24, return_tensors="np", device="cpu")
    nested = p(x, text=text, text_kwargs={"padding": "max_length", "max_length": 24}, return_tensors="np")
    assert isinstance(flat["pixel_values"], np.ndarray) and flat["input_ids"].shape == (2, 24)
    for key in flat:
        np.testing.assert_array_equal(flat[key], nested[key])
    np.testing.assert_array_equal(flat["pixel_values"], default["pixel_values"].numpy())
    ten = p(x, render_views="reference10")["pixel_values"]
    torch.testing.assert_close(
        ten, CLIP2PointProcessor(num_points=64, image_size=32)(x)["pixel_values"], rtol=0, atol=0
    )
    assert p.views == "reference6"  # a call's views do not change the saved setting


def test_from_pretrained_of_an_empty_folder_fails(tmp_path):
    with pytest.raises(OSError, match=r"processor_config\.json"):
        CLIP2PointProcessor.from_pretrained(tmp_path)


def test_auto_processor(tmp_path):
    AutoProcessor.register(CLIP2PointConfig, CLIP2PointProcessor, exist_ok=True)
    p = CLIP2PointProcessor(tokenizer=make_tiny_tokenizer(), num_points=64, image_size=32, views="reference6")
    p.save_pretrained(tmp_path)
    q = AutoProcessor.from_pretrained(tmp_path)
    assert type(q) is CLIP2PointProcessor
    assert settings(q) == settings(p)


def test_remote_code_folder_loads_without_the_package(tmp_path):
    """The saved folder carries the processor's code flat; a process that cannot import clip2point_hf
    loads it with trust_remote_code and renders identically."""
    previous = CLIP2PointProcessor._auto_class
    CLIP2PointProcessor.register_for_auto_class("AutoProcessor")
    try:
        p = CLIP2PointProcessor(
            tokenizer=make_tiny_tokenizer(), num_points=64, image_size=32, views="reference6"
        )
        p.save_pretrained(tmp_path)
    finally:
        CLIP2PointProcessor._auto_class = previous
    assert {"processing_clip2point.py", "points_clip2point.py", "rendering_clip2point.py"} <= set(
        os.listdir(tmp_path)
    )
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"] == {"AutoProcessor": "processing_clip2point.CLIP2PointProcessor"}
    x = clouds(2, 300, seed=12)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["clip2point_hf"] = None  # the package must not be needed
        import numpy as np, torch
        from transformers import AutoProcessor
        folder = {str(tmp_path)!r}
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert "clip2point_hf" not in type(processor).__module__, type(processor).__module__
        batch = processor(np.load(folder + "/x.npy"), text=["image of a chair", "a lamp"])
        torch.save(dict(batch), folder + "/out.pt")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    remote = torch.load(tmp_path / "out.pt", weights_only=True)
    local = p(x, text=["image of a chair", "a lamp"])
    for key in local:
        torch.testing.assert_close(remote[key], local[key], rtol=0, atol=0)


def test_save_views_image(tmp_path, small):
    cloud = clouds(1, 2000, seed=13)[0]
    path = tmp_path / "views.png"
    sheet = small.save_views_image(cloud, path)
    img = Image.open(path)
    assert img.size == sheet.size and img.mode == "L"
    assert img.size == (3 * (64 + 4) + 4, 1 * (64 + 4 + 14) + 4)  # 3 views in a row, labelled
    arr = np.asarray(img)
    cell = arr[4 + 14 : 4 + 14 + 64, 4 : 4 + 64]  # the first view, below its label
    grey = small.renderer.render_intensity(small.prepare_point_clouds([cloud]), small.views)[0, 0]
    np.testing.assert_array_equal(cell, (grey * 255).round().to(torch.uint8).numpy())
    assert (arr[:4] == 160).all()  # the margin
