"""Depth-rendering throughput: our stencil/scatter renderer against the reference's algorithm.

Measures, for 1024-point clouds, 10 views (the reference preset), 224 x 224:

* ``render``     -- ``DepthRenderer.render``: normalised (B, N, 3) points on the device -> CLIP pixel values
                    (B, V, 3, S, S). This is what training and ``CLIP2PointProcessor`` run.
* ``rasterize``  -- ``DepthRenderer.rasterize``: depth and winning point index (B, V, S, S).
* ``processor``  -- ``CLIP2PointProcessor.__call__`` from a host numpy array (validation, normalisation,
                    copy to the device, render).
* ``naive``      -- a straightforward implementation of the reference's algorithm (PyTorch3D's naive
                    rasteriser: every pixel tests every point), vectorised in torch, at a batch it can finish
                    (``--naive-batch``); its z-buffer is checked against ours.
* ``vit``        -- a ViT-B/32 CLIP vision tower (random weights) on the same B x V views, for scale.
* ``render-onepass`` -- ``render`` with every point of a chunk in one pass (``point_chunk_size`` unbounded):
                    the renderer before large clouds were split into passes (``--large``).
* ``render-graph``   -- CUDA only: ``render`` captured once in a CUDA graph and replayed.
* ``render-compile`` -- ``torch.compile(renderer.render)`` (inductor, default mode).

Every configuration runs in its own process so that peak memory is that configuration's own:
CPU: growth of the process's peak resident set (``resource.getrusage(...).ru_maxrss``) over the
baseline taken after the inputs exist; CUDA: ``torch.cuda.max_memory_allocated`` over the baseline.
Times are medians of ``--repeats`` runs after one warm-up run, under ``torch.inference_mode``. The machine
may be shared: every row also reports the share of the machine's CPU that *other* processes used while it
was timed (Linux ``/proc/stat``); PyTorch's CPU kernels slow down many-fold when another process takes a
core, so only rows near 0 % measure the renderer.

    python benchmarks/render.py                       # CPU, batches 1 32 256
    python benchmarks/render.py --device cuda         # GPU
    python benchmarks/render.py --json results.json   # also write the raw numbers
    python benchmarks/render.py --large --repeats 3   # batch 1 at 1k..1M points: passes vs one pass
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from clip2point_hf import CLIP2PointFeatureExtractor
from clip2point_hf.points_clip2point import normalize_point_cloud
from clip2point_hf.rendering_clip2point import VIEW_PRESETS, DepthRenderer, camera_basis

# ------------------------------------------------------------------------------------------------
# The reference's algorithm, written plainly: every pixel tests every point (docs/design.md, "Depth rendering").
# ------------------------------------------------------------------------------------------------


def naive_depth(
    points: torch.Tensor, views, image_size: int, radius: float, rows_per_step: int = 16
) -> torch.Tensor:
    """(B, N, 3) normalised points -> (B, V, S, S) depth, 0 = background; views at distance 1."""
    b = points.shape[0]
    s = image_size
    device = points.device
    grid = 1.0 - (2.0 * torch.arange(s, device=device, dtype=torch.float32) + 1.0) / s  # x_ndc(j), y_ndc(i)
    depth = torch.zeros(b, len(views), s, s, device=device)
    for v, (elev, azim, dist) in enumerate(views):
        basis = camera_basis(elev, azim, 1.0, device=device)
        centre = basis.centre * dist
        for bi in range(b):
            rel = points[bi] / dist - centre  # (N, 3)
            x, y, z = rel @ basis.x_axis, rel @ basis.y_axis, rel @ basis.z_axis
            z_or_inf = torch.where(z >= 0, z, torch.inf)
            for r0 in range(0, s, rows_per_step):  # rows of pixels: (rows, S, N) tests at a time
                yy = grid[r0 : r0 + rows_per_step, None, None]
                xx = grid[None, :, None]
                covered = (xx - x) ** 2 + (yy - y) ** 2 < radius**2
                nearest = torch.where(covered, z_or_inf, torch.inf).amin(dim=-1)
                depth[bi, v, r0 : r0 + rows_per_step] = torch.where(torch.isinf(nearest), 0.0, nearest)
    return depth


# ------------------------------------------------------------------------------------------------
# One configuration (run in a child process)
# ------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_sample() -> tuple[float, float, float]:
    """(machine busy seconds, machine total seconds, this process's CPU seconds), for measuring how much
    of the machine other processes used during a timing loop (Linux /proc/stat; zeros elsewhere)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:9]]
    except OSError:
        return 0.0, 0.0, own.ru_utime + own.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / tick, sum(fields) / tick, own.ru_utime + own.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _graphed(fn, device: torch.device):
    """``fn`` as a CUDA graph: the first call warms up on a side stream and captures (so the graph's memory
    pool counts in the peak), later calls replay it and return the graph's output tensor."""
    state = {}

    def replay():
        if not state:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream(device).wait_stream(stream)
            state["graph"] = torch.cuda.CUDAGraph()
            with torch.cuda.graph(state["graph"]):
                state["out"] = fn()
        state["graph"].replay()
        return state["out"]

    return replay


def run_one(mode: str, batch: int, args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    views = VIEW_PRESETS[args.views]
    host = np.random.default_rng(0).normal(size=(batch, args.points, 3)).astype("float32")
    points = normalize_point_cloud(torch.from_numpy(host))[0].to(device)
    renderer = DepthRenderer(image_size=args.size)
    check = None

    if mode in ("render", "render-onepass", "render-compile"):
        if mode == "render-onepass":
            renderer = DepthRenderer(image_size=args.size, point_chunk_size=2**62)
        render = renderer.render
        if mode == "render-compile":
            with torch.inference_mode():
                renderer.render(points, views)  # fill the camera caches first: one trace, no recompilation
            render = torch.compile(renderer.render, backend=getattr(args, "compile_backend", "inductor"))

        def step():
            return render(points, views)
    elif mode == "render-graph":
        if device.type != "cuda":
            raise ValueError("render-graph needs --device cuda")
        step = _graphed(lambda: renderer.render(points, views), device)
    elif mode == "rasterize":

        def step():
            return renderer.rasterize(points, views)
    elif mode == "processor":
        processor = CLIP2PointFeatureExtractor(num_points=args.points, image_size=args.size, views=args.views)

        def step():
            return processor(host, device=device)["pixel_values"]
    elif mode == "naive":

        def step():
            return renderer.depth_to_image(naive_depth(points, views, args.size, renderer.point_radius))
    elif mode == "vit":
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        tower = (
            CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=args.size, patch_size=32))
            .to(device)
            .eval()
        )
        pixels = renderer.render(points, views).flatten(0, 1)
        dtype = torch.bfloat16 if args.vit_dtype == "bfloat16" else torch.float32

        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                return tower(pixel_values=pixels).image_embeds
    else:
        raise ValueError(mode)

    with torch.inference_mode():
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        rss0 = _rss_mb()
        out = step()  # warm-up
        _sync(device)
        if mode == "naive":  # the reference algorithm and ours must agree
            ours = renderer.rasterize(points, views).depth
            ref = naive_depth(points, views, args.size, renderer.point_radius)
            check = {
                "max_abs_depth_diff": float((ours - ref).abs().max()),
                "coverage_mismatch_pixels": int(((ours > 0) != (ref > 0)).sum()),
            }
        del out
        times = []
        repeats = args.naive_repeats if mode == "naive" else args.repeats
        cpu0 = cpu_sample()
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            out = step()
            _sync(device)
            times.append(time.perf_counter() - t0)
            del out
        cpu1 = cpu_sample()
        total = cpu1[1] - cpu0[1]
        others = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[2] - cpu0[2])) / total if total > 0 else 0.0
        if device.type == "cuda":
            peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            memory_kind = "cuda max_memory_allocated"
        else:
            peak_mb = _rss_mb() - rss0
            memory_kind = "peak RSS growth"
    median = statistics.median(times)
    return {
        "mode": mode,
        "batch": batch,
        "points": args.points,
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "repeats": len(times),
        "clouds_per_s": batch / median,
        "peak_mb": peak_mb,
        "memory": memory_kind,
        "check": check,
        "others_cpu_percent": 100.0 * others,
    }


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def machine(device: str) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        info["cpu"] = platform.processor()
    info["cpu_count"] = os.cpu_count()
    info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def plan(args) -> list[tuple[str, int, int]]:
    """(mode, batch, points) of every configuration to run."""
    if args.large:
        return [(m, 1, n) for n in args.large_points for m in ("render", "render-onepass")]
    jobs = []
    for b in args.batches:
        jobs += [("render", b, args.points), ("rasterize", b, args.points), ("processor", b, args.points)]
        if args.vit and b <= args.vit_max_batch:
            jobs.append(("vit", b, args.points))
    jobs.append(("naive", args.naive_batch, args.points))
    return jobs


def large_markdown(results: list[dict], info: dict, args) -> str:
    """Side by side: the default plan (points in passes) against one pass, per cloud size."""
    by = {(r["mode"], r["points"]): r for r in results}
    lines = [
        f"Machine: {info.get('gpu') or info.get('cpu')} ({info['cpu_count']} CPU cores, {info['threads']} torch "
        f"threads), torch {info['torch']}, device `{args.device}`. One cloud, {len(VIEW_PRESETS[args.views])} "
        f"views, {args.size} x {args.size}; median of {args.repeats} runs after a warm-up; each row in a fresh "
        f"process; peak memory: {results[0]['memory'] if results else '-'}.",
        "",
        "| points | passes: ms | one pass: ms | passes: peak MB | one pass: peak MB | other processes' CPU % |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in args.large_points:
        a, b = by.get(("render", n)), by.get(("render-onepass", n))
        if a and b:
            lines.append(
                f"| {n:,} | {a['median_s'] * 1e3:.0f} | {b['median_s'] * 1e3:.0f} | {a['peak_mb']:.0f} | "
                f"{b['peak_mb']:.0f} | {a['others_cpu_percent']:.0f} / {b['others_cpu_percent']:.0f} |"
            )
    return "\n".join(lines)


def markdown(results: list[dict], info: dict, args) -> str:
    by = {(r["mode"], r["batch"]): r for r in results}
    lines = [
        f"Machine: {info.get('gpu') or info.get('cpu')} ({info['cpu_count']} CPU cores, {info['threads']} torch "
        f"threads), torch {info['torch']}, device `{args.device}`.",
        f"Workload: {args.points} points, {len(VIEW_PRESETS[args.views])} views (`{args.views}`), "
        f"{args.size} x {args.size}; median of {args.repeats} runs after a warm-up.",
        "",
        "| what | batch | median ms / batch (min) | clouds/s | peak memory MB | other processes' CPU % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['batch']} | {r['median_s'] * 1e3:.1f} ({r['min_s'] * 1e3:.1f}) | "
            f"{r['clouds_per_s']:.1f} | {r['peak_mb']:.0f} | {r.get('others_cpu_percent', 0):.0f} |"
        )
    naive = by.get(("naive", args.naive_batch))
    if naive:
        per_cloud_naive = naive["median_s"] / naive["batch"]
        lines += ["", f"Naive reference algorithm: {per_cloud_naive:.2f} s per cloud."]
        for b in args.batches:
            ours = by.get(("render", b))
            if ours:
                ratio = per_cloud_naive / (ours["median_s"] / b)
                lines.append(f"- ours (`render`) at batch {b} is {ratio:.0f}x faster per cloud.")
        if naive.get("check"):
            c = naive["check"]
            lines.append(
                f"- z-buffer check against ours: max |depth diff| {c['max_abs_depth_diff']:.2e}, "
                f"coverage mismatches {c['coverage_mismatch_pixels']} pixels."
            )
    for b in args.batches:
        vit, ours = by.get(("vit", b)), by.get(("render", b))
        if vit and ours:
            lines.append(
                f"- batch {b}: render takes {100 * ours['median_s'] / vit['median_s']:.1f}% of the ViT-B/32 "
                f"tower's time on the same {b * len(VIEW_PRESETS[args.views])} views ({args.vit_dtype})."
            )
    lines.append(f"Peak memory: {results[0]['memory']}.")
    lines.append(
        f"Load average (1, 5, 15 min) at start {info['loadavg_at_start']}, at end {info.get('loadavg_at_end')}."
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--views", default="reference10", choices=sorted(VIEW_PRESETS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--naive-batch", type=int, default=1)
    parser.add_argument("--naive-repeats", type=int, default=3)
    parser.add_argument(
        "--vit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time a ViT-B/32 tower on the views (default: on for cuda, batch 1 on cpu)",
    )
    parser.add_argument("--vit-max-batch", type=int, default=None)
    parser.add_argument("--vit-dtype", choices=["float32", "bfloat16"], default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--large", action="store_true", help="batch 1 at --large-points: passes vs one pass")
    parser.add_argument("--large-points", type=int, nargs="+", default=[1024, 10_000, 100_000, 1_000_000])
    parser.add_argument("--json", default=None, help="write the raw results here")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.vit is None:
        args.vit = True
    if args.vit_max_batch is None:
        args.vit_max_batch = max(args.batches) if args.device == "cuda" else 1
    if args.vit_dtype is None:
        args.vit_dtype = "bfloat16" if args.device == "cuda" else "float32"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_one(args.child[0], int(args.child[1]), args)))
        return

    info = machine(args.device)
    results = []
    for mode, batch, points in plan(args):
        cmd = [
            sys.executable, os.path.abspath(__file__), "--device", args.device, "--repeats", str(args.repeats),
            "--points", str(points), "--views", args.views, "--size", str(args.size),
            "--naive-repeats", str(args.naive_repeats), "--vit-dtype", args.vit_dtype, "--child", mode, str(batch),
        ]  # fmt: skip
        cmd += ["--threads", str(args.threads)] if args.threads else []
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{mode} batch {batch} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        print(
            f"{mode:9s} batch {batch:4d} points {points:7d}: {result['median_s'] * 1e3:9.1f} ms  {result['clouds_per_s']:9.1f} clouds/s"
            f"  peak {result['peak_mb']:7.0f} MB  others' CPU {result['others_cpu_percent']:3.0f}%",
            flush=True,
        )
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report = large_markdown(results, info, args) if args.large else markdown(results, info, args)
    print()
    print(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"machine": info, "args": vars(args), "results": results, "markdown": report}, f, indent=2
            )


if __name__ == "__main__":
    main()
