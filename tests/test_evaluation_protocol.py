"""`--protocol reference`: the authors' zero-shot protocol, setting for setting, and explicit
flags over it."""

from __future__ import annotations

import pytest

from clip2point_apps.arguments import BackboneArguments, parse_args
from clip2point_apps.evaluation import ZeroShotArguments, apply_protocol


def resolved(*argv: str) -> dict:
    args, _ = parse_args((ZeroShotArguments, BackboneArguments), ["--dataset", "data", *argv])
    return apply_protocol(args)


# Read from their zeroshot.py (--views 6, "image of a " + name, Selector(6, 0), Renderer(points_radius=0.02),
# render(..., rot=True) for ModelNet and rot=False for ScanObjectNN), datasets/ (1024 points, main_split =
# OBJ_BG) and render/render.py (Renderer.norm: our "parity" depth mode).
THEIR_ZERO_SHOT = {
    "views": "reference6",
    "prompts": ["reference"],
    "prompt_naming": "reference",
    "depth_mode": "parity",
    "num_points": 1024,
    "point_radius": 0.02,
    "scanobjectnn_variant": "OBJ_BG",
}


@pytest.mark.parametrize(("fmt", "up_axis"), [("modelnet", "z"), ("scanobjectnn", "y")])
def test_reference_protocol_is_their_zero_shot(fmt, up_axis):
    assert resolved("--protocol", "reference", "--dataset_format", fmt) == {
        **THEIR_ZERO_SHOT,
        "up_axis": up_axis,
    }


def test_explicit_flags_override_the_protocol():
    settings = resolved(
        "--protocol",
        "reference",
        "--dataset_format",
        "modelnet",
        "--views",
        "reference10",
        "--prompt_naming",
        "ours",
        "--up_axis",
        "y",
        "--num_points",
        "2048",
        "--depth_mode",
        "minmax",
    )
    expected = {"views": "reference10", "prompt_naming": "ours", "up_axis": "y", "num_points": 2048}
    assert settings == {**THEIR_ZERO_SHOT, **expected, "depth_mode": "minmax"}


def test_default_protocol_keeps_the_package_defaults():
    settings = resolved("--dataset_format", "modelnet")
    assert settings == {
        **THEIR_ZERO_SHOT,
        "prompt_naming": "ours",
        "scanobjectnn_variant": "PB_T50_RS",
        "up_axis": None,  # the loader's metadata decides
    }
