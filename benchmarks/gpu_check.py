#!/usr/bin/env python
"""One prepared GPU check: run it at once whenever a task is lent a device (an H200, ~15 minutes in all).

Steps, each in its own child process with its own time budget (a step that would overrun the whole budget
is skipped with a note; a hung step is killed at its budget and the others still run):

* ``environment``    -- versions (torch, CUDA, transformers, accelerate, datasets, evaluate), the GPU.
* ``tests``          -- ``pytest -m gpu`` (the CUDA-vs-CPU render parity test among them); on a GPU a
                        skipped test counts as a failure.
* ``models``         -- a bf16-autocast forward + backward of each model class (ViT-B/32 shapes, random
                        weights): finite loss, finite gradients on exactly the trainable parameters, and the
                        bf16 loss against an fp32 forward.
* ``render``         -- ``benchmarks/render.py``: eager ``DepthRenderer.render`` and a CUDA-graph replay of it
                        at batch 1 / 32 / 256 (1024 points, 10 views, 224): clouds/s, peak memory.
* ``zero_shot``      -- the zero-shot pipeline (ViT-B/32 shapes, random weights, model in bf16, 10 views):
                        clouds/s and its share of the bare depth tower's clouds/s on the same images.
* ``pretrain``       -- ``benchmarks/train.py throughput``: a pre-training step at batch 256, bf16, ViT-B/32:
                        samples/s, peak memory, rendering share.
* ``render_compile`` -- ``torch.compile(DepthRenderer.render)`` at batch 256 (last: compilation is slow).

A step that misses its target saves a ``torch.profiler`` table (where the time goes) as
``profile_<step>.txt``. Results: ``gpu_check.json`` and ``gpu_check.md`` under ``--out`` (default ``$OUT``),
rewritten after every step, so a run cut short still leaves what it measured.

One-time, on a machine with PyPI access, in the repository root (``.whl/`` is git-ignored; the device image
has torch 2.11, transformers, accelerate, pandas, pyarrow of unknown version, Python 3.12; it lacks datasets,
evaluate and their dill / multiprocess; pyarrow is carried because datasets 5.2 needs pyarrow >= 24):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \\
        datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 pyarrow==26.0.1

On the device (the `run` tool; ``gpu_check.sh`` installs the wheels with the device README's recipe, never
touching torch, then runs this script):  command ``bash benchmarks/gpu_check.sh``, carry ``[".whl"]``,
timeout_s ``540``. Anywhere else: ``python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check`` runs every
step at tiny sizes on CPU (``tests/test_gpu_check.py`` does, in CI).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = ["environment", "tests", "models", "render", "zero_shot", "pretrain", "render_compile"]
#: Seconds each step may take on the device (the whole run must stay under ~8 minutes).
BUDGET_S = {
    "environment": 45,
    "tests": 120,
    "models": 90,
    "render": 100,
    "zero_shot": 90,
    "pretrain": 120,
    "render_compile": 150,
}
TARGETS = {  # the speed targets on one H200 / H100
    "render_clouds_per_s_b256": 20_000,
    "zero_shot_clouds_per_s": 2_500,
    "zero_shot_percent_of_tower": 90,
    "pretrain_samples_per_s": 1_000,
    "pretrain_render_share_percent_max": 10,
}
RESULT_TAG = "GPU_CHECK_RESULT "


def sizes(dry_run: bool) -> SimpleNamespace:
    """Workload sizes: the full ones on the device; tiny ones on CPU for ``--dry-run``."""
    if dry_run:
        return SimpleNamespace(
            device="cpu",
            dry_run=True,
            tiny=True,
            points=64,
            image_size=32,
            views="reference10",
            batches=[1, 2],
            compile_batch=2,
            compile_backend="eager",
            repeats=2,
            model_batch=2,
            zero_shot_batch=2,
            zero_shot_batches=2,
            pretrain=dict(clip_config="tiny", batch_size=2, num_points=64, warmup=1, steps=1),
            test_paths=["tests/test_rendering.py"],
        )
    return SimpleNamespace(
        device="cuda",
        dry_run=False,
        tiny=False,
        points=1024,
        image_size=224,
        views="reference10",
        batches=[1, 32, 256],
        compile_batch=256,
        compile_backend="inductor",
        repeats=10,
        model_batch=8,
        zero_shot_batch=256,
        zero_shot_batches=5,
        pretrain=dict(clip_config="vit-b-32", batch_size=256, num_points=1024, warmup=2, steps=5),
        test_paths=["tests"],
    )


# ------------------------------------------------------------------------------------------------
# Steps (run in a child process; each returns a JSON-able dict)
# ------------------------------------------------------------------------------------------------


def _profile(fn, device: str, out_dir: Path, name: str, rows: int = 15) -> str:
    """Run ``fn`` once under torch.profiler; save the top kernels/ops table; return the file name."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    path = out_dir / f"profile_{name}.txt"
    path.write_text(prof.key_averages().table(sort_by=key, row_limit=rows))
    return path.name


def step_environment(cfg, out_dir: Path) -> dict:
    import importlib.metadata as md
    import platform

    import torch

    import clip2point_hf

    versions = {}
    for name in ("torch", "transformers", "accelerate", "datasets", "evaluate", "pyarrow", "safetensors"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    info = {
        "python": platform.python_version(),
        "versions": versions,
        "clip2point_hf": clip2point_hf.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "ok": True,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    elif not cfg.dry_run:
        raise RuntimeError("no CUDA device visible to torch")
    return info


def step_tests(cfg, out_dir: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "gpu",
        "-rs",
        "-p",
        "no:cacheprovider",
        *cfg.test_paths,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    (out_dir / "pytest_gpu.txt").write_text(proc.stdout + proc.stderr)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {
        k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", summary)
    }
    ok = proc.returncode == 0 and (cfg.dry_run or (counts.get("passed", 0) > 0 and not counts.get("skipped")))
    return {
        "ok": ok,
        "returncode": proc.returncode,
        "summary": summary,
        **counts,
        "seconds": time.perf_counter() - t0,
        "log": "pytest_gpu.txt",
    }


def step_models(cfg, out_dir: Path) -> dict:
    import torch

    from clip2point_hf import CLIP2PointForPointCloudClassification, CLIP2PointForPreTraining, CLIP2PointModel
    from clip2point_hf.testing_utils import make_tiny_tokenizer
    from encoder import vit_b32_config

    device = torch.device(cfg.device)
    tokenizer = make_tiny_tokenizer()
    config = vit_b32_config(tokenizer, num_views=10, tiny=cfg.tiny)
    s, b, v = config.vision_config.image_size, cfg.model_batch, config.num_views
    g = torch.Generator().manual_seed(0)
    views = torch.randn(b, v, 3, s, s, generator=g).to(device)
    image = torch.randn(b, 3, s, s, generator=g).to(device)
    depth = torch.randn(b, 2, 3, s, s, generator=g).to(device)
    labels = torch.arange(b).remainder(3).to(device)
    text = tokenizer(["a chair", "a table", "a lamp"], padding=True, return_tensors="pt").to(device)

    def run_model(model, cls):
        if cls is CLIP2PointModel:
            out = model(pixel_values=views, **text)
            return out.logits_per_point_cloud.float().logsumexp(-1).mean()
        if cls is CLIP2PointForPreTraining:
            return model(pixel_values=image, depth_pixel_values=depth, return_loss=True).loss
        return model(pixel_values=views, labels=labels).loss

    results = {}
    for cls in (CLIP2PointModel, CLIP2PointForPreTraining, CLIP2PointForPointCloudClassification):
        torch.manual_seed(0)
        model = cls(config).to(device).eval()  # eval: no dropout, so the bf16 and fp32 losses compare
        model.freeze_for_training()  # what the training scripts do: the method's trainable set
        if cls is CLIP2PointForPointCloudClassification:
            model.set_class_names(["chair", "table", "lamp"], tokenizer)
        with torch.no_grad():
            reference = float(run_model(model, cls))
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = run_model(model, cls)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        missing = [n for n, p in trainable if p.grad is None]
        non_finite = [
            n for n, p in trainable if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        frozen_with_grad = [
            n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None
        ]
        results[cls.__name__] = {
            "ok": bool(torch.isfinite(loss)) and not missing and not non_finite and not frozen_with_grad,
            "loss_bf16": float(loss),
            "loss_fp32": reference,
            "relative_loss_difference": abs(float(loss) - reference) / max(abs(reference), 1e-12),
            "trainable_tensors": len(trainable),
            "missing_grads": missing[:5],
            "non_finite_grads": non_finite[:5],
            "frozen_with_grad": frozen_with_grad[:5],
            "seconds_forward_backward": seconds,
        }
        del model, loss
    return {"ok": all(r["ok"] for r in results.values()), "batch": b, "views": v, "classes": results}


def _render_args(cfg, **extra) -> SimpleNamespace:
    return SimpleNamespace(
        device=cfg.device,
        views=cfg.views,
        points=cfg.points,
        size=cfg.image_size,
        repeats=cfg.repeats,
        naive_repeats=1,
        vit_dtype="bfloat16",
        compile_backend=cfg.compile_backend,
        **extra,
    )


def step_render(cfg, out_dir: Path) -> dict:
    import render

    rows = []
    modes = ["render", "render-graph"] if cfg.device == "cuda" else ["render"]
    for batch in cfg.batches:
        for mode in modes:
            rows.append(render.run_one(mode, batch, _render_args(cfg)))
    result = {
        "ok": True,
        "rows": rows,
        "graphs": "render-graph rows" if cfg.device == "cuda" else "CPU: none",
    }
    best = max(r["clouds_per_s"] for r in rows if r["batch"] == max(cfg.batches))
    result["best_clouds_per_s_at_max_batch"] = best
    if cfg.dry_run or best < TARGETS["render_clouds_per_s_b256"]:
        import numpy as np
        import torch

        from clip2point_hf.points_clip2point import normalize_point_cloud
        from clip2point_hf.rendering_clip2point import DepthRenderer

        host = np.random.default_rng(0).normal(size=(max(cfg.batches), cfg.points, 3)).astype("float32")
        points = normalize_point_cloud(torch.from_numpy(host))[0].to(cfg.device)
        renderer = DepthRenderer(image_size=cfg.image_size)
        with torch.inference_mode():
            renderer.render(points, cfg.views)
            result["profile"] = _profile(
                lambda: renderer.render(points, cfg.views), cfg.device, out_dir, "render"
            )
    return result


def step_render_compile(cfg, out_dir: Path) -> dict:
    import render

    t0 = time.perf_counter()
    row = render.run_one("render-compile", cfg.compile_batch, _render_args(cfg))
    return {
        "ok": True,
        "backend": cfg.compile_backend,
        "row": row,
        "seconds_with_compilation": time.perf_counter() - t0,
    }


def step_zero_shot(cfg, out_dir: Path) -> dict:
    import numpy as np
    import torch

    from clip2point_hf.testing_utils import make_tiny_tokenizer
    from encoder import time_pipeline, time_tower, vit_b32_model, zero_shot_pipeline

    tokenizer = make_tiny_tokenizer()
    model = vit_b32_model(tokenizer, num_views=10, tiny=cfg.tiny).to(cfg.device, torch.bfloat16)
    pipe = zero_shot_pipeline(model, tokenizer, device=cfg.device)
    b = cfg.zero_shot_batch
    rng = np.random.default_rng(0)
    clouds = list(rng.normal(size=(b * cfg.zero_shot_batches, cfg.points, 3)).astype("float32"))
    labels = ["chair", "table", "lamp", "airplane", "car", "bed", "sofa", "guitar", "bottle", "person"]
    with torch.inference_mode():
        timed = time_pipeline(pipe, clouds, labels, b)
        pixels = pipe.processor(clouds[:b], device=cfg.device)["pixel_values"]
        tower_s = time_tower(model, pixels, cfg.repeats)
    timed.pop("predictions")
    result = {
        "ok": True,
        "batch": b,
        "views": pixels.shape[1],
        "dtype": str(model.dtype),
        "pipeline_clouds_per_s": timed["clouds_per_s"],
        "tower_clouds_per_s": b / tower_s,
        "pipeline_percent_of_tower": 100.0 * timed["clouds_per_s"] * tower_s / b,
        "batches_timed": timed["batches_timed"],
    }
    missed = (
        result["pipeline_clouds_per_s"] < TARGETS["zero_shot_clouds_per_s"]
        or result["pipeline_percent_of_tower"] < TARGETS["zero_shot_percent_of_tower"]
    )
    if cfg.dry_run or missed:
        with torch.inference_mode():
            result["profile"] = _profile(
                lambda: pipe(clouds[:b], candidate_labels=labels, batch_size=b),
                cfg.device,
                out_dir,
                "zero_shot",
            )
    return result


def step_pretrain(cfg, out_dir: Path) -> dict:
    import train

    args = SimpleNamespace(mixed_precision="bf16", device=cfg.device, **cfg.pretrain)
    result = train.throughput(args)
    result["ok"] = True
    missed = (
        result["samples_per_second"] < TARGETS["pretrain_samples_per_s"]
        or 100 * result["render_share"] > TARGETS["pretrain_render_share_percent_max"]
    )
    if cfg.dry_run or missed:
        short = SimpleNamespace(**{**vars(args), "warmup": 0, "steps": 1})
        result["profile"] = _profile(lambda: train.throughput(short), cfg.device, out_dir, "pretrain")
    return result


STEP_FUNCTIONS = {name: globals()[f"step_{name}"] for name in STEPS}


def run_steps(names: list[str], dry_run: bool, out_dir: Path) -> None:
    """Child: run the steps, printing one tagged JSON line per step (the parent parses them)."""
    sys.path.insert(0, str(HERE))
    cfg = sizes(dry_run)
    for name in names:
        t0 = time.perf_counter()
        try:
            result = STEP_FUNCTIONS[name](cfg, out_dir)
        except Exception as err:  # report and go on: one broken step must not hide the others
            import traceback

            result = {
                "ok": False,
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-3000:],
            }
        result["step_seconds"] = time.perf_counter() - t0
        print(RESULT_TAG + json.dumps({"step": name, **result}, default=str), flush=True)


# ------------------------------------------------------------------------------------------------
# Parent: budgets, child processes, the report
# ------------------------------------------------------------------------------------------------


def _fmt(x, spec=".0f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    steps = report["steps"]
    env = steps.get("environment", {})
    lines = [
        f"GPU check ({'dry run, CPU, tiny sizes' if report['dry_run'] else 'device'}): "
        f"{env.get('gpu', 'no GPU')}, torch {env.get('versions', {}).get('torch')}, "
        f"transformers {env.get('versions', {}).get('transformers')}, python {env.get('python')}; "
        f"total {report['total_seconds']:.0f} s.",
        "",
        "| step | status | result | target |",
        "|---|---|---|---|",
    ]

    def row(step, result, target=""):
        r = steps.get(step, {})
        status = r.get("status", "not run")
        if status == "done":
            status = "ok" if r.get("ok") else "FAILED"
        lines.append(f"| {step} | {status} | {result} | {target} |")

    t = steps.get("tests", {})
    row("tests", t.get("summary", t.get("error", "")))
    m = steps.get("models", {})
    classes = m.get("classes", {})
    row(
        "models",
        "; ".join(
            f"{k}: loss bf16 {v['loss_bf16']:.4g} vs fp32 {v['loss_fp32']:.4g}, {v['seconds_forward_backward']:.2f} s"
            for k, v in classes.items()
        )
        or m.get("error", ""),
    )
    for r in steps.get("render", {}).get("rows", []):
        target = f">= {TARGETS['render_clouds_per_s_b256']:,} clouds/s" if r["batch"] == 256 else ""
        lines.append(
            f"| render: {r['mode']} batch {r['batch']} | ok | {r['clouds_per_s']:,.0f} clouds/s, "
            f"{r['median_s'] * 1e3:.2f} ms, peak {r['peak_mb']:,.0f} MB | {target} |"
        )
    if "rows" not in steps.get("render", {}):
        row("render", steps.get("render", {}).get("error", ""))
    c = steps.get("render_compile", {})
    if "row" in c:
        r = c["row"]
        row(
            "render_compile",
            f"batch {r['batch']}: {r['clouds_per_s']:,.0f} clouds/s, peak {r['peak_mb']:,.0f} MB "
            f"({c['backend']}; {c['seconds_with_compilation']:.0f} s with compilation)",
        )
    else:
        row("render_compile", c.get("error", c.get("note", "")))
    z = steps.get("zero_shot", {})
    row(
        "zero_shot",
        f"{_fmt(z.get('pipeline_clouds_per_s'), ',.0f')} clouds/s ({z.get('dtype')}, {z.get('views')} views, batch "
        f"{z.get('batch')}); bare tower {_fmt(z.get('tower_clouds_per_s'), ',.0f')} clouds/s; pipeline = "
        f"{_fmt(z.get('pipeline_percent_of_tower'))}% of tower"
        if "pipeline_clouds_per_s" in z
        else z.get("error", z.get("note", "")),
        f">= {TARGETS['zero_shot_clouds_per_s']:,} clouds/s, >= {TARGETS['zero_shot_percent_of_tower']}%",
    )
    p = steps.get("pretrain", {})
    peak = p.get("peak_gpu_memory_gib", p.get("peak_process_rss_gib"))
    row(
        "pretrain",
        f"{_fmt(p.get('samples_per_second'), ',.0f')} samples/s (batch {p.get('batch_size')}, "
        f"{p.get('mixed_precision')}), step {_fmt(p.get('step_seconds_median'), '.3f')} s, rendering "
        f"{_fmt(100 * p['render_share'], '.1f')}%, peak {_fmt(peak, '.1f')} GiB"
        if "samples_per_second" in p
        else p.get("error", p.get("note", "")),
        f">= {TARGETS['pretrain_samples_per_s']:,} samples/s, rendering < {TARGETS['pretrain_render_share_percent_max']}%",
    )
    profiles = [s.get("profile") for s in steps.values() if s.get("profile")]
    if profiles:
        lines += ["", "Profiles (top ops by device time): " + ", ".join(profiles)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="every step at tiny sizes on CPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "out/gpu_check"))
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all steps together")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=STEPS)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        run_steps(args.child, args.dry_run, out_dir)
        return 0

    start = time.perf_counter()
    report = {"dry_run": args.dry_run, "budget_seconds": args.budget, "steps": {}, "targets": TARGETS}
    # On the device every step gets a fresh process and its own budget; the dry run shares one process.
    groups = [list(args.steps)] if args.dry_run else [[s] for s in args.steps]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for group in groups:
        left = args.budget - (time.perf_counter() - start)
        need = sum(BUDGET_S[s] for s in group)
        if not args.dry_run and left < min(need, 60):
            for s in group:
                report["steps"][s] = {
                    "status": "skipped",
                    "note": f"skipped: {left:.0f} s of the budget left",
                }
            continue
        timeout = left if args.dry_run else min(need, left)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(out_dir), "--child", *group]
        cmd += ["--dry-run"] if args.dry_run else []
        print(f"[gpu_check] {' '.join(group)} (timeout {timeout:.0f} s)", flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
            stdout, stderr, status = proc.stdout, proc.stderr, "done"
        except subprocess.TimeoutExpired as err:
            stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
            stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else err.stderr or ""
            status = "timed out"
        for line in stdout.splitlines():
            if line.startswith(RESULT_TAG):
                result = json.loads(line[len(RESULT_TAG) :])
                report["steps"][result.pop("step")] = {"status": "done", **result}
        for s in group:
            if s not in report["steps"]:
                report["steps"][s] = {
                    "status": status,
                    "ok": False,
                    "error": f"{status}; stderr: {stderr[-1500:]}",
                }
            r = report["steps"][s]
            print(f"[gpu_check] {s}: {r['status']} ok={r.get('ok')} {r.get('error', '')[:300]}", flush=True)
        report["total_seconds"] = time.perf_counter() - start
        (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
        (out_dir / "gpu_check.md").write_text(markdown(report) + "\n")
    report["total_seconds"] = time.perf_counter() - start
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    text = markdown(report)
    (out_dir / "gpu_check.md").write_text(text + "\n")
    print(text)
    return 0 if all(r.get("ok") for r in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
