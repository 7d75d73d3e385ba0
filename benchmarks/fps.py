"""Farthest-point sampling on CPU: our PyTorch loop, ``farthest_point_sample`` (which takes ``fpsample`` when
it is installed) and ``fpsample``'s own functions, side by side in one process on the same clouds.

For each size, every method runs ``--repeats`` times after a warm-up (interleaved, so that load from other
processes hits them alike) and the median is reported, with whether its indices equal the PyTorch loop's
from the same start index, and the share of the machine's CPU other processes used meanwhile.

    python benchmarks/fps.py                          # 8,192 -> 1,024 and 100,000 -> 1,024
    python benchmarks/fps.py --json fps.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import clip2point_hf.points_clip2point as points
from render import cpu_sample, machine


def methods(start: int, kdline_height: int) -> dict:
    import fpsample

    return {
        "torch loop (ours, fallback)": lambda p, k: points._farthest_point_sample_torch(
            p[None], k, torch.tensor([start])
        )[0],
        "farthest_point_sample (fpsample path)": lambda p, k: points.farthest_point_sample(
            p, k, start_index=start
        ),
        "fpsample.fps_sampling": lambda p, k: torch.from_numpy(
            fpsample.fps_sampling(p.numpy(), k, start_idx=start).astype("int64")
        ),
        f"fpsample.bucket_fps_kdline_sampling (h={kdline_height})": lambda p, k: torch.from_numpy(
            fpsample.bucket_fps_kdline_sampling(p.numpy(), k, h=kdline_height, start_idx=start).astype(
                "int64"
            )
        ),
    }


def run(args) -> list[dict]:
    rows = []
    for n in args.sizes:
        points = torch.from_numpy(np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32))
        table = methods(args.start, args.kdline_height)
        reference = table["torch loop (ours, fallback)"](points, args.samples)
        times = {name: [] for name in table}
        outputs = {name: fn(points, args.samples) for name, fn in table.items()}  # warm-up
        cpu0 = cpu_sample()
        for _ in range(args.repeats):
            for name, fn in table.items():
                t0 = time.perf_counter()
                fn(points, args.samples)
                times[name].append(time.perf_counter() - t0)
        cpu1 = cpu_sample()
        total = cpu1[1] - cpu0[1]
        others = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[2] - cpu0[2])) / total if total > 0 else 0.0
        loop = statistics.median(times["torch loop (ours, fallback)"])
        for name in table:
            out = outputs[name]
            rows.append(
                {
                    "points": n,
                    "samples": args.samples,
                    "method": name,
                    "median_ms": 1e3 * statistics.median(times[name]),
                    "min_ms": 1e3 * min(times[name]),
                    "speedup_vs_torch_loop": loop / statistics.median(times[name]),
                    "same_indices_as_torch_loop": bool(torch.equal(out, reference)),
                    "shared_indices": int(np.intersect1d(out.numpy(), reference.numpy()).size),
                    "first_index": int(out[0]),
                    "others_cpu_percent": 100.0 * others,
                }
            )
            r = rows[-1]
            print(
                f"{n:7d} -> {args.samples}: {name:48s} {r['median_ms']:8.1f} ms  x{r['speedup_vs_torch_loop']:5.1f}"
                f"  same={r['same_indices_as_torch_loop']} shared={r['shared_indices']}  others' CPU {r['others_cpu_percent']:.0f}%",
                flush=True,
            )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 100_000])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--kdline-height", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    info = machine("cpu")
    rows = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
