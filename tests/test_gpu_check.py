"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end in its dry run (every step at tiny sizes on
CPU), so the script a device session runs at once cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # every step of the device check, each in its own process
def test_gpu_check_dry_run_runs_every_step(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = report["steps"]
    expected = ["environment", "tests", "models", "render", "zero_shot", "pretrain", "render_compile"]
    assert sorted(steps) == sorted(expected)
    for name in expected:
        assert steps[name]["status"] == "done" and steps[name]["ok"], (name, steps[name])
    # The gpu-marked tests were collected (and skipped on CPU), not silently missing.
    assert steps["tests"]["skipped"] >= 1
    assert set(steps["models"]["classes"]) == {
        "CLIP2PointModel",
        "CLIP2PointForPreTraining",
        "CLIP2PointForPointCloudClassification",
    }
    assert all(c["trainable_tensors"] > 0 for c in steps["models"]["classes"].values())
    assert [r["batch"] for r in steps["render"]["rows"]] == [1, 2]
    assert all(r["clouds_per_s"] > 0 for r in steps["render"]["rows"])
    assert steps["zero_shot"]["pipeline_clouds_per_s"] > 0 and steps["zero_shot"]["views"] == 10
    assert steps["pretrain"]["samples_per_second"] > 0 and 0 < steps["pretrain"]["render_share"] < 1
    assert steps["render_compile"]["row"]["clouds_per_s"] > 0
    for name in ("render", "zero_shot", "pretrain"):  # the dry run always writes the profiles
        assert (tmp_path / steps[name]["profile"]).stat().st_size > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| pretrain | ok |" in table and "| zero_shot | ok |" in table
