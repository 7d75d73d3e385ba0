"""Benchmarks of ``clip2point_hf.data`` on the real data in ``<repo>/../shared/data``.

Measures:

- building SHREC'16 (600 OBJ meshes -> 1024-point clouds, area-weighted, seeded) into the Arrow cache,
  meshes per second, with 1 and 2 processes (the build is from scratch every time: ``rebuild=True``);
- loading the built cache again (a cache hit);
- the cache's size on disk;
- clouds per second through the keyed loader from the cache (:class:`KeyedDataset`, one Arrow read per
  batch) with augmentation (:class:`PointCloudBatchTransform`), with 0 and 2 workers (torch uses one
  intra-op thread in the main process here, as in DataLoader workers);
- ``build_render_pairs`` on SHREC'16 (10 shaded 224 x 224 views + an 8192-point cloud per mesh):
  objects per second and output size (skip with ``--skip-render``).

Usage: ``python benchmarks/data.py [--repeats 3] [--skip-render] [--json results.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO / ".." / "shared" / "data").resolve()


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def bench_build(root: Path, work: Path, num_proc: int, repeats: int) -> dict:
    from clip2point_hf.data import load_mesh_folder

    times = []
    for _ in range(repeats):
        cache = work / f"cache_np{num_proc}"
        shutil.rmtree(cache, ignore_errors=True)
        t0 = time.perf_counter()
        ds = load_mesh_folder(root, num_points=1024, seed=0, cache_dir=cache, num_proc=num_proc, rebuild=True)
        times.append(time.perf_counter() - t0)
    n = sum(d.num_rows for d in ds.values())
    best = min(times)
    return {
        "num_proc": num_proc,
        "meshes": n,
        "seconds_best": best,
        "seconds_median": statistics.median(times),
        "meshes_per_s": n / best,
    }


def bench_loader(ds, *, workers: int, epochs: int, batch_size: int = 32) -> dict:
    from clip2point_hf.data import KeyedDataset, PointCloudBatchTransform

    t = PointCloudBatchTransform(num_points=1024, rotate=True, scale=(2 / 3, 3 / 2), translate=0.2)
    loader = KeyedDataset(ds, t, seed=0, stream="bench").loader(
        batch_size, shuffle=True, drop_last=False, num_workers=workers
    )
    n = 0
    next(iter(loader))  # warm-up (worker start-up is not counted)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            n += batch["points"].shape[0]
            assert batch["points"].shape[1:] == (1024, 3)
    dt = time.perf_counter() - t0
    return {"mode": "keyed", "workers": workers, "clouds": n, "seconds": dt, "clouds_per_s": n / dt}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    shrec = SHARED / "shrec_16"
    if not shrec.is_dir():
        print(f"SKIP: {shrec} is absent (the benchmark needs the shared SHREC'16 data)")
        return 0
    import datasets
    import torch

    datasets.disable_progress_bars()
    from clip2point_hf.data import build_render_pairs, load_mesh_folder

    work = Path(args.workdir or tempfile.mkdtemp(prefix="c2p_data_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "datasets": datasets.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg(),
        }
    }
    try:
        results["build"] = [bench_build(shrec, work, p, args.repeats) for p in (1, 2)]
        cache = work / "cache_np2"
        t0 = time.perf_counter()
        ds = load_mesh_folder(shrec, num_points=1024, seed=0, cache_dir=cache)
        results["cache_hit_seconds"] = time.perf_counter() - t0
        entry = next(p for p in (cache / "mesh_folder").iterdir() if not p.name.startswith("."))
        results["cache_bytes"] = du(entry)
        results["raw_bytes"] = du(shrec)
        train = ds["train"]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in DataLoader workers; 2 threads on tiny batches only add sync cost
        try:
            results["loader"] = [bench_loader(train, workers=w, epochs=args.epochs) for w in (0, 2)]
        finally:
            torch.set_num_threads(threads)
        if not args.skip_render:
            out = work / "pairs"
            t0 = time.perf_counter()
            build_render_pairs(shrec, out)
            dt = time.perf_counter() - t0
            results["render_pairs"] = {
                "objects": 600,
                "seconds": dt,
                "objects_per_s": 600 / dt,
                "images_per_s": 6000 / dt,
                "output_bytes": du(out),
                "torch_threads": torch.get_num_threads(),
            }
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    results["machine"]["load_average_at_end"] = os.getloadavg()
    print(f"machine: {results['machine']}")
    print("\n| SHREC'16 build (600 meshes -> 1024 pts) | best s | median s | meshes/s |\n|---|---|---|---|")
    for b in results["build"]:
        print(
            f"| num_proc={b['num_proc']} | {b['seconds_best']:.2f} | {b['seconds_median']:.2f} | {b['meshes_per_s']:.0f} |"
        )
    print(f"\ncache hit (load_from_disk): {results['cache_hit_seconds'] * 1000:.0f} ms")
    print(
        f"cache size on disk: {mib(results['cache_bytes'])} (the 600 OBJ files: {mib(results['raw_bytes'])})"
    )
    print(
        "\n| DataLoader from the cache (480 clouds x epochs, batch 32, augment) | workers | clouds/s |\n|---|---|---|"
    )
    for r in results["loader"]:
        print(f"| {r['mode']} | {r['workers']} | {r['clouds_per_s']:.0f} |")
    if "render_pairs" in results:
        r = results["render_pairs"]
        print(
            f"\nbuild_render_pairs(SHREC'16): {r['seconds']:.1f} s, {r['objects_per_s']:.1f} objects/s "
            f"({r['images_per_s']:.0f} images/s), output {mib(r['output_bytes'])}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
