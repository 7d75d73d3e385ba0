"""Builds under `accelerate launch` with two CPU processes (gloo) split the work by accelerate's process index, with no
shard flags, and give exactly the one-process result: `clip2point embed` (a shape index) and `build_render_pairs`.

`accelerate launch --cpu --num_processes 2` starts ONE process (accelerate issue #2741), so the processes are started
as `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`. The process boundary is what is tested."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2point_apps.retrieval import ShapeIndex
from clip2point_hf.data import build_render_pairs
from conftest import save_tiny_model, write_tetra_mesh_folder

pytestmark = pytest.mark.slow


def launch_two_processes(*args, cwd) -> subprocess.CompletedProcess:
    with socket.socket() as probe:  # a free port for the gloo rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(port), *map(str, args)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_embed_under_accelerate_equals_a_one_process_build(tmp_path):
    model = save_tiny_model(tmp_path / "model", num_points=64)
    rng = np.random.default_rng(0)
    (tmp_path / "shapes").mkdir()
    for i in range(7):
        np.save(tmp_path / "shapes" / f"s{i}.npy", rng.normal(size=(100, 3)).astype(np.float32))
    run = launch_two_processes(
        "-m", "clip2point_apps.cli", "embed", "shapes", "--model", model, "-o", "two.index", "--chunk_size", 2,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote two.index") == 1  # the main process merged and reported, once
    assert (
        "embedding (shard 0/2)" in run.stderr and "embedding (shard 1/2)" in run.stderr
    )  # the work was split
    assert not (tmp_path / "two.index" / "chunks").exists()
    single = ShapeIndex.build(
        tmp_path / "shapes", model, tmp_path / "one.index", chunk_size=2, progress=False
    )
    both = ShapeIndex.load(tmp_path / "two.index")
    assert list(both.dataset["name"]) == list(single.dataset["name"])
    assert list(both.dataset["path"]) == list(single.dataset["path"])
    torch.testing.assert_close(both.embeddings, single.embeddings, atol=1e-6, rtol=0)
    manifest = (tmp_path / "two.index" / "build.json").read_text()
    assert '"chunk_size": 2' in manifest


def test_build_render_pairs_under_accelerate_equals_a_one_process_build(tmp_path):
    write_tetra_mesh_folder(tmp_path / "meshes")
    script = tmp_path / "pairs.py"
    settings = "num_points=64, render_points=256, image_size=32, batch_size=1"
    script.write_text(
        "import sys\nfrom clip2point_hf.data import build_render_pairs\n"
        f"build_render_pairs(sys.argv[1], sys.argv[2], {settings})\n"
    )
    run = launch_two_processes(script, tmp_path / "meshes", tmp_path / "two", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    build_render_pairs(
        tmp_path / "meshes", tmp_path / "one", num_points=64, render_points=256, image_size=32, batch_size=1
    )

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert sorted(two) == sorted(one) and len([f for f in one if f.endswith(".png")]) == 6 * 10
    assert [f for f in two if f != "clip2point_pairs.json" and two[f] != one[f]] == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".two")]  # no temporary folder left
