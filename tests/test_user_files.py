"""A user's own files on the command line: the up axis at every entry point, folder formats, wrapped
OFF records, empty splits, argument files, option names, result folders, a quiet console, view titles."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import clip2point_hf  # noqa: F401  (registers the task)
from clip2point_hf.data import detect_dataset_format
from clip2point_hf.errors import DatasetFormatError
from clip2point_hf.mesh_io import read_off
from clip2point_hf.points_clip2point import convert_up_axis
from clip2point_hf.rendering_clip2point import camera_basis

BOX_FACES = [(0, 1, 2), (0, 2, 3), (4, 6, 5), (4, 7, 6), (0, 4, 5), (0, 5, 1)]
BOX_FACES += [(1, 5, 6), (1, 6, 2), (2, 6, 7), (2, 7, 3), (3, 7, 4), (3, 4, 0)]


def box(size) -> np.ndarray:
    """The 8 corners of an axis-aligned box centred on the origin (bottom 4, then top 4 along z)."""
    sx, sy, sz = (s / 2 for s in size)
    return np.array(
        [[x, y, z] for z in (-sz, sz) for x, y in ((-sx, -sy), (sx, -sy), (sx, sy), (-sx, sy))], float
    )


def write_off(path, vertices, faces=BOX_FACES) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{a:g} {b:g} {c:g}\n" for a, b, c in vertices) + "".join(
        f"3 {a} {b} {c}\n" for a, b, c in faces
    )
    path.write_text(f"OFF\n{len(vertices)} {len(faces)} 0\n{body}")


def write_mesh(path, vertices, faces=BOX_FACES) -> None:
    """The same mesh as .off, .obj, .ply (ASCII) or .stl (binary), by the path's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".off":
        write_off(path, vertices, faces)
    elif path.suffix == ".obj":
        path.write_text(
            "".join(f"v {a} {b} {c}\n" for a, b, c in vertices)
            + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)
        )
    elif path.suffix == ".ply":
        head = f"ply\nformat ascii 1.0\nelement vertex {len(vertices)}\nproperty float x\nproperty float y\n"
        head += f"property float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
        path.write_text(
            head
            + "".join(f"{a} {b} {c}\n" for a, b, c in vertices)
            + "".join(f"3 {a} {b} {c}\n" for a, b, c in faces)
        )
    else:
        stl = b"\0" * 80 + struct.pack("<I", len(faces))
        for tri in faces:
            stl += struct.pack("<12fH", 0, 0, 0, *np.asarray(vertices)[list(tri)].ravel(), 0)
        path.write_bytes(stl)


def run_cli(capsys, *args) -> subprocess.CompletedProcess:
    from clip2point_apps.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def one_line_error(result, *fragments) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------------------- 1: up axis


def dark_extent(cell: np.ndarray) -> tuple[int, int]:
    """(rows, columns) spanned by the object's pixels in one grey view (background is white)."""
    rows, cols = np.nonzero(cell < 250)
    return int(np.ptp(rows)) + 1, int(np.ptp(cols)) + 1


def test_render_up_axis_z_stands_a_modelnet_style_box_upright(tmp_path, capsys):
    from PIL import Image

    write_off(tmp_path / "tall.off", box((0.2, 0.2, 2.0)))  # ModelNet convention: z is up
    extents = {}
    for axis in ("z", "y"):
        out = tmp_path / f"views_{axis}.png"
        result = run_cli(
            capsys, "render", tmp_path / "tall.off", "--views", "6", "--up-axis", axis, "-o", out
        )
        assert result.returncode == 0, result.stderr
        assert f"up axis {axis}" in result.stdout
        sheet = np.asarray(Image.open(out))
        front = sheet[
            16 + 4 + 14 : 16 + 4 + 14 + 224, 4 : 4 + 224
        ]  # the front view (title 16, pad 4, label 14)
        extents[axis] = dark_extent(front)
    rows, cols = extents["z"]
    assert rows > 4 * cols  # upright: tall along the picture's vertical axis
    rows, cols = extents["y"]
    assert rows < 2 * cols  # read as y-up, the box points at the camera: no tall silhouette


def test_classify_up_axis_z_scores_the_file_as_its_upright_copy(tiny_model_dir, tmp_path, capsys):
    corners = box((0.3, 0.5, 2.0))
    write_off(tmp_path / "z" / "box.off", corners)  # same file name: the same surface samples
    upright = convert_up_axis(torch.tensor(corners, dtype=torch.float32), "z").double().numpy()
    write_off(tmp_path / "y" / "box.off", upright)
    args = ("--labels", "chair,cone,lamp", "--model", tiny_model_dir, "--json")
    as_z = run_cli(capsys, "classify", tmp_path / "z" / "box.off", "--up_axis", "z", *args)
    as_y = run_cli(capsys, "classify", tmp_path / "y" / "box.off", *args)
    assert as_z.returncode == as_y.returncode == 0, as_z.stderr + as_y.stderr
    assert "up axis: z (--up_axis)" in as_z.stderr
    assert "up axis: y (the model's processor" in as_y.stderr
    (z_scores,) = json.loads(as_z.stdout).values()
    (y_scores,) = json.loads(as_y.stdout).values()
    assert {r["label"]: r["score"] for r in z_scores} == pytest.approx(
        {r["label"]: r["score"] for r in y_scores}, abs=1e-5
    )
    plain = run_cli(capsys, "classify", tmp_path / "z" / "box.off", *args)  # the processor's y: another cloud
    assert {r["label"]: r["score"] for r in json.loads(plain.stdout)[str(tmp_path / "z" / "box.off")]} != (
        pytest.approx({r["label"]: r["score"] for r in y_scores}, abs=1e-7)
    )


def test_pipeline_takes_up_axis_per_call(tiny_model_dir):
    from transformers import pipeline

    classifier = pipeline("zero-shot-point-cloud-classification", model=str(tiny_model_dir))
    cloud = np.random.default_rng(0).normal(size=(500, 3)) * [0.1, 0.2, 1.0]
    upright = convert_up_axis(torch.tensor(cloud, dtype=torch.float32), "z").numpy()
    got = classifier(cloud, candidate_labels=["a", "b", "c"], up_axis="z")
    want = classifier(upright, candidate_labels=["a", "b", "c"])
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)
    with pytest.raises(ValueError, match="up_axis"):
        classifier(cloud, candidate_labels=["a", "b"], up_axis="w")


# --------------------------------------------------------------------------------------------------------- 3, 8: folders


def mixed_folder(root):
    """3 classes x (OFF, PLY, OBJ, STL): boxes of three different shapes."""
    shapes = {"tall": (0.3, 0.3, 2.0), "flat": (2.0, 2.0, 0.2), "long": (2.0, 0.3, 0.3)}
    for name, size in shapes.items():
        for ext in (".off", ".ply", ".obj", ".stl"):
            write_mesh(root / name / "test" / f"{name}{ext}", box(size))
    return root


def test_mixed_format_folder_is_a_mesh_folder_and_every_object_is_scored(tiny_model_dir, tmp_path, capsys):
    root = mixed_folder(tmp_path / "mixed")
    assert detect_dataset_format(root) == "mesh_folder"
    out = tmp_path / "scores"
    result = run_cli(capsys, "evaluate", "--dataset", root, "--model", tiny_model_dir, "--output_dir", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "zero_shot_results.json").read_text())
    assert summary["num_examples"] == 12 and summary["up_axis"] == "y"
    assert "up axis: y" in result.stdout
    # a second run into the same folder does not overwrite the first's results silently
    again = run_cli(
        capsys,
        "evaluate",
        "--dataset",
        root,
        "--model",
        tiny_model_dir,
        "--output_dir",
        out,
        "--up-axis",
        "z",
    )
    one_line_error(again, "already holds", "--overwrite_output_dir")
    again = run_cli(
        capsys, "evaluate", "--dataset", root, "--model", tiny_model_dir, "--output_dir", out, "--up_axis", "z",
        "--overwrite_output_dir", "--dataset_format", "mesh_folder",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "zero_shot_results.json").read_text())["up_axis"] == "z"


def test_off_only_folder_is_modelnet_and_an_ambiguous_folder_is_refused(tmp_path):
    for name in ("a", "b"):
        write_off(tmp_path / "mn" / name / "test" / f"{name}_0001.off", box((1, 1, 1)))
    assert detect_dataset_format(tmp_path / "mn") == "modelnet"
    (tmp_path / "mn" / "shapenet_pc").mkdir()  # a ShapeNet-55 pairs marker beside meshes
    write_mesh(tmp_path / "mn" / "a" / "test" / "a.obj", box((1, 1, 1)))
    with pytest.raises(DatasetFormatError, match="several dataset formats") as error:
        detect_dataset_format(tmp_path / "mn")
    assert "--dataset_format shapenet_pairs" in str(error.value)
    assert "--dataset_format mesh_folder" in str(error.value)


def test_a_dataset_one_level_away_is_named_in_the_error(tmp_path):
    """`--dataset X` where X only holds `ModelNet10/`, or a class folder of it, says where the dataset is."""
    for name in ("sofa", "table"):
        for split in ("train", "test"):
            write_off(tmp_path / "X" / "ModelNet10" / name / split / f"{name}_0001.off", box((1, 1, 1)))
    dataset = tmp_path / "X" / "ModelNet10"
    assert detect_dataset_format(dataset) == "modelnet"
    with pytest.raises(DatasetFormatError) as error:
        detect_dataset_format(tmp_path / "X")
    assert f"pass --dataset {dataset}" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(DatasetFormatError) as error:
        detect_dataset_format(dataset / "sofa")
    assert f"the dataset at {dataset}" in str(error.value)


# --------------------------------------------------------------------------------------------------------- 4: OFF


def test_off_records_wrapping_over_lines_read_like_one_per_line(tmp_path):
    corners = box((1, 2, 3))
    write_off(tmp_path / "plain.off", corners)
    tokens = (tmp_path / "plain.off").read_text().split()
    # header and counts, then every record broken after its second token
    wrapped = "OFF\n8 12 0\n"
    rest = tokens[4:]
    chunks = [rest[i : i + 3] for i in range(0, 24, 3)] + [rest[24 + 4 * i : 28 + 4 * i] for i in range(12)]
    wrapped += "".join(" ".join(c[:2]) + "\n" + " ".join(c[2:]) + "\n" for c in chunks)
    (tmp_path / "wrapped.off").write_text(wrapped)
    plain, got = read_off(tmp_path / "plain.off"), read_off(tmp_path / "wrapped.off")
    np.testing.assert_array_equal(got.vertices, plain.vertices)
    np.testing.assert_array_equal(got.faces, plain.faces)
    (tmp_path / "short.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n4 0 1\n2\n")
    with pytest.raises(DatasetFormatError, match=r"short\.off"):
        read_off(tmp_path / "short.off")


# --------------------------------------------------------------------------------------------------------- 5, 6, 7


def normal_resampled(root, test_names=("cone_0099",)):
    """A tiny modelnet40_normal_resampled folder whose test list names files that are absent."""
    rng = np.random.default_rng(0)
    (root / "cone").mkdir(parents=True)
    for i in (1, 2):
        np.savetxt(root / "cone" / f"cone_{i:04d}.txt", rng.normal(size=(64, 6)), delimiter=",")
    (root / "modelnet40_shape_names.txt").write_text("cone\n")
    (root / "modelnet40_train.txt").write_text("cone_0001\ncone_0002\n")
    (root / "modelnet40_test.txt").write_text("".join(n + "\n" for n in test_names))
    return root


def test_empty_split_and_missing_files_are_reported_before_any_work(tmp_path):
    from clip2point_apps.evaluation import main

    root = normal_resampled(tmp_path / "mn40")
    common = [
        "--dataset",
        root,
        "--model",
        tmp_path / "no-such-model",
        "--cache_dir",
        tmp_path / "cache",
        "--num_points",
        32,
    ]
    common = [str(a) for a in common] + ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="--on_missing skip"):  # the scripts' option, not the library keyword
        main(common)
    with pytest.raises(ValueError, match="'test' split is empty"):  # before the model is loaded
        main([*common, "--on_missing", "skip"])


def test_argument_file_takes_numbers_for_text_fields(tmp_path):
    from clip2point_apps.arguments import BackboneArguments, parse_args
    from clip2point_apps.evaluation import ZeroShotArguments, parse_views

    for name, text in (("a.json", json.dumps({"views": 6, "split": "test"})), ("a.yaml", "views: 10\n")):
        (tmp_path / name).write_text(text)
        args, _ = parse_args((ZeroShotArguments, BackboneArguments), [str(tmp_path / name)])
        assert parse_views(args.views) == ("reference6" if name == "a.json" else "reference10")


def test_cli_options_are_one_family_and_device_cuda_without_cuda_is_one_line(
    tiny_model_dir, tmp_path, capsys
):
    from clip2point_apps.cli import build_parser
    from clip2point_apps.evaluation import parse_evaluation_arguments

    parser = build_parser()
    a = parser.parse_args(["classify", "x.ply", "--batch-size", "3", "--up-axis", "z"])
    b = parser.parse_args(["classify", "x.ply", "--batch_size", "3", "--up_axis", "z"])
    assert vars(a) == vars(b) and a.batch_size == 3 and a.up_axis == "z"
    assert (
        "--batch-size" not in a.command_parser.format_help()
        and "--batch_size" in a.command_parser.format_help()
    )
    # `clip2point evaluate` takes the evaluation's own options, with the same two spellings
    a, _ = parse_evaluation_arguments(
        ["--dataset", "d", "--model", "m", "--batch-size", "3", "--on-missing", "skip"]
    )
    b, _ = parse_evaluation_arguments(
        ["--dataset", "d", "--model", "m", "--batch_size", "3", "--on_missing", "skip"]
    )
    assert a == b and a.batch_size == 3 and a.on_missing == "skip"
    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    np.save(tmp_path / "c.npy", np.random.default_rng(0).normal(size=(50, 3)))
    result = run_cli(
        capsys,
        "classify",
        tmp_path / "c.npy",
        "--labels",
        "a,b",
        "--model",
        tiny_model_dir,
        "--device",
        "cuda",
    )
    one_line_error(result, "--device cuda", "no CUDA")


# --------------------------------------------------------------------------------------------------------- 9, 10, 12


def test_quiet_console_and_one_line_warnings():
    import datasets
    from transformers.utils import logging

    from clip2point_apps.console import configure_console

    saved = warnings.formatwarning
    try:
        configure_console(verbose=False)
        assert not datasets.is_progress_bar_enabled() and not logging.is_progress_bar_enabled()
        text = warnings.formatwarning("skipping 3 files", UserWarning, "x.py", 1, "return _load_txt(root)")
        assert text == "warning: skipping 3 files\n"
    finally:
        warnings.formatwarning = saved
        datasets.enable_progress_bars()
        logging.enable_progress_bar()


def test_long_builds_show_progress_on_the_main_process(monkeypatch):
    import tqdm.auto

    from clip2point_hf.data._common import PROGRESS_MIN_TASKS, run_tasks

    bars = []

    class Recorder(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            bars.append(kwargs)
            super().__init__(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    assert list(run_tasks(abs, list(range(-PROGRESS_MIN_TASKS, 0)), 1)) == list(
        range(PROGRESS_MIN_TASKS, 0, -1)
    )
    assert bars[-1]["total"] == PROGRESS_MIN_TASKS and bars[-1]["disable"] is None  # shown on a terminal
    list(run_tasks(abs, [1, 2], 1))
    assert bars[-1]["disable"] is True  # a handful of files: no bar


def test_view_titles_name_where_the_camera_stands():
    from clip2point_hf.rendering_clip2point import view_name

    names = {(0, 0): "front", (90, 0): "top", (180, 0): "back", (270, 0): "bottom", (0, 90): "right"}
    names |= {(0, -90): "left", (-90, 180): "bottom", (225, -45): "bottom-back-right"}
    for (e, a), name in names.items():
        assert view_name(e, a) == name
        centre = camera_basis(e, a).centre.tolist()  # independent: the camera centre's signs
        axis = {"right": 0, "left": 0, "top": 1, "bottom": 1, "front": 2, "back": 2}[name.split("-")[-1]]
        assert (centre[axis] > 0) == (name.split("-")[-1] in ("right", "top", "front"))
    assert view_name(0, 0, 1.5) == "front x1.5"


@pytest.mark.slow  # the README block in a shell
def test_readme_try_it_block_runs(tmp_path):
    """The README's 'Try it without the Hub' commands, top to bottom, in an empty folder."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- tested: tests/test_user_files.py -->\n```bash\n", 1)[1].split("```", 1)[0]
    bin_dir = Path(sys.executable).parent
    script = f'export PATH="{bin_dir}:$PATH"\nset -e\n' + block
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (tmp_path / "views.png").is_file() and (tmp_path / "tiny-model" / "config.json").is_file()
