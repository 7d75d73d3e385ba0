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


def _write_box_off(path, size) -> None:
    """A box as an OFF mesh (ModelNet's file type)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    corners = [(x, y, z) for x in (0, size[0]) for y in (0, size[1]) for z in (0, size[2])]
    faces = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1), (2, 3, 7), (2, 7, 6), (0, 2, 6),
             (0, 6, 4), (1, 5, 7), (1, 7, 3)]  # fmt: skip
    path.write_text(
        f"OFF\n8 {len(faces)} 0\n"
        + "".join(f"{x} {y} {z}\n" for x, y, z in corners)
        + "".join(f"3 {a} {b} {c}\n" for a, b, c in faces)
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        ([], "up axis: z (the ModelNet (2 classes) loader's default; --up_axis to change)"),
        (
            ["--protocol", "reference"],
            "up axis: z (the reference protocol's for ModelNet (2 classes); --up_axis to change)",
        ),
        (["--protocol", "reference", "--up_axis", "-y"], "up axis: -y (--up_axis)"),
    ],
)
def test_the_evaluation_says_where_its_up_axis_came_from(tiny_model_dir, tmp_path, capsys, argv, line):
    """`--protocol reference` sets ModelNet's axis itself: the line says so, not `(--up_axis)`."""
    from clip2point_apps.cli import main

    for name, size in (("tall", (1, 1, 3)), ("flat", (3, 3, 1))):
        _write_box_off(tmp_path / "ModelNet40" / name / "test" / f"{name}_0001.off", size)
    args = ["evaluate", "--dataset", str(tmp_path / "ModelNet40"), "--model", str(tiny_model_dir)]
    assert main([*args, "--output_dir", str(tmp_path / "out"), "--num_points", "128", *argv]) == 0
    assert line in capsys.readouterr().out.splitlines()
