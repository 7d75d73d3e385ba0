"""Our file readers against trimesh's, on every mesh at hand: which files each reads, whether they read the same
geometry, and how fast.

- SHREC'16 (``<repo>/../shared/data/shrec_16``, 600 OBJ meshes): files read, same triangles (up to order), time
  per file; surface sampling (ours against ``trimesh.sample.sample_surface``, both area-weighted uniform): the
  distance of each sampler's face counts to the area weights, its error on the surface's exact second moment,
  and the Chamfer distance between the two samplers' clouds against that between two seeds of ours;
- ModelNet40 ``normal_resampled`` (txt point files): ours, and what trimesh does with them;
- the edge cases the tests write (wrapped OFF records, glued ``OFF8 12 0`` headers, big-endian and mixed-polygon
  PLY, PLY triangle strips, negative OBJ indices, multi-body STL, glTF node transforms, strips and fans, ...)
  and the bad files of ``tests/test_data_mesh_io.py``: same geometry as written, or an error;
- a 40,000-vertex, 79,202-triangle surface written in every mesh format: time per file;
- the time ``import trimesh`` adds to a process that has numpy.

Times are medians of ``--repeats`` runs, ours and trimesh's alternating in one process.

Usage: ``python benchmarks/readers.py [--repeats 5] [--json results.json]`` (needs ``pip install trimesh``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO / ".." / "shared" / "data").resolve()
sys.path.insert(0, str(REPO / "tests"))  # the tests' writers of small files in every format


def triangles(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(F, 9)`` corner coordinates, each triangle turned to start at its smallest corner (winding kept), rows
    sorted: two meshes with the same triangles give the same array, whatever their vertex and face order.
    Corners are ordered by their coordinates rounded to 1e-9 of the mesh's size, so rounding noise (a rotation's
    2e-16 for 0) cannot reorder them."""
    corners = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]  # (F, 3, 3)
    if not len(corners):
        return corners.reshape(0, 9)
    key = np.round(corners / max(float(np.abs(corners).max()), 1e-300), 9)
    first = np.array([min(range(3), key=lambda k, t=t: tuple(t[k])) for t in key])
    turned = np.stack([np.roll(c, -int(k), axis=0) for c, k in zip(corners, first, strict=True)])
    rows = turned.reshape(len(turned), 9)
    keys = np.stack([np.roll(c, -int(k), axis=0) for c, k in zip(key, first, strict=True)]).reshape(
        len(rows), 9
    )
    return rows[np.lexsort(keys.T[::-1])]


def same_triangles(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    ta, tb = triangles(*a), triangles(*b)
    scale = max(float(np.abs(ta).max(initial=0)), 1.0)
    return ta.shape == tb.shape and bool(np.allclose(ta, tb, rtol=0, atol=1e-6 * scale))


def ours(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from clip2point_hf.point_files import read_mesh

    mesh = read_mesh(path)
    return mesh.vertices, mesh.faces


def theirs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.load(path, process=False, force="mesh")
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def outcome(read: Callable, path: Path, expected) -> str:
    """``same``, ``differs``, ``no error`` (a bad file read as something) or ``error: <first words>``."""
    try:
        got = read(path)
    except Exception as error:
        text = str(error).replace(str(path), "<file>").splitlines()[0] if str(error) else type(error).__name__
        return f"error: {text[:60]}"
    if expected is None:
        return f"no error ({len(got[1])} faces)"
    return "same" if len(got[1]) and same_triangles(got, expected) else f"differs ({len(got[1])} faces)"


def timed(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each call, the calls alternating (their order reversed every other repeat)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# ------------------------------------------------------------------------------------------------ SHREC'16


def bench_shrec(repeats: int) -> dict:
    import trimesh

    from clip2point_hf.mesh_io import Mesh, sample_surface
    from clip2point_hf.seeding import seeded_rng

    files = sorted((SHARED / "shrec_16").glob("*/*/*.obj"))
    read = {"ours": 0, "trimesh": 0}
    same = 0
    loaded = []
    for path in files:
        results = {}
        for name, reader in (("ours", ours), ("trimesh", theirs)):
            try:
                results[name] = reader(path)
                read[name] += 1
            except Exception:
                pass
        if len(results) == 2:
            same += same_triangles(results["ours"], results["trimesh"])
            loaded.append((path, Mesh(*results["ours"])))
    times = timed(
        {"ours": lambda: [ours(p) for p in files], "trimesh": lambda: [theirs(p) for p in files]}, repeats
    )
    # Sampling: both area-weighted uniform. Per mesh: the total-variation distance of the face counts from the
    # area weights, the relative error on the surface's exact second moment about its centroid, Chamfer
    # distances (in units of the mesh's radius).
    count = 2048
    stats = {name: {"tv": [], "moment": []} for name in ("ours", "trimesh")}
    chamfer_across, chamfer_seeds = [], []
    meshes = [
        (path, mesh, trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)) for path, mesh in loaded
    ]
    for path, mesh, tm in meshes:
        v, f = mesh.vertices, mesh.faces
        area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
        weights = area / area.sum()
        g = v[f].mean(axis=1)
        centre = (weights[:, None] * g).sum(axis=0)
        spread = ((v[f] - g[:, None]) ** 2).sum(axis=(1, 2)) / 12  # E|p - g|^2 on a triangle
        exact = float((weights * (((g - centre) ** 2).sum(axis=1) + spread)).sum())
        radius = float(np.linalg.norm(v - centre, axis=1).max())
        a, face_a = sample_surface_with_faces(mesh, count, seeded_rng(0, path.name))
        b, face_b = trimesh.sample.sample_surface(tm, count, seed=0)
        for name, points, picked in (("ours", a, face_a), ("trimesh", np.asarray(b), np.asarray(face_b))):
            hits = np.bincount(picked, minlength=len(f)) / count
            stats[name]["tv"].append(0.5 * np.abs(hits - weights).sum())
            stats[name]["moment"].append(((points - centre) ** 2).sum(axis=1).mean() / exact - 1)
        other_seed = sample_surface(mesh, count, seeded_rng(1, path.name), dtype=np.float64)
        chamfer_across.append(chamfer(a, np.asarray(b)) / radius)
        chamfer_seeds.append(chamfer(a, other_seed) / radius)
    sample_times = timed(
        {
            "ours": lambda: [sample_surface(m, count, seeded_rng(0, p.name)) for p, m, _ in meshes],
            "trimesh": lambda: [trimesh.sample.sample_surface(t, count, seed=0) for _, _, t in meshes],
        },
        repeats,
    )
    return {
        "files": len(files),
        "read": read,
        "same_triangles": same,
        "ms_per_file": {k: 1e3 * t / len(files) for k, t in times.items()},
        "sampling": {
            name: {
                "tv": float(np.mean(s["tv"])),
                "moment_bias": float(np.mean(s["moment"])),
                "moment_bias_se": float(np.std(s["moment"]) / np.sqrt(len(s["moment"]))),
                "moment_error": float(np.mean(np.abs(s["moment"]))),
            }
            for name, s in stats.items()
        },
        "chamfer_ours_vs_trimesh": float(np.mean(chamfer_across)),
        "chamfer_ours_seed0_vs_seed1": float(np.mean(chamfer_seeds)),
        "sampling_ms_per_mesh": {k: 1e3 * t / len(meshes) for k, t in sample_times.items()},
    }


def sample_surface_with_faces(mesh, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Our sampler's points and the face each came from (its normals identify the face only up to ties, so the
    faces are found as sample_surface picks them: the same draws from the same generator)."""
    from clip2point_hf.mesh_io import sample_surface

    state = rng.bit_generator.state
    points = sample_surface(mesh, count, rng, dtype=np.float64)
    rng.bit_generator.state = state
    v, f = mesh.vertices, mesh.faces
    dbl_area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    cdf = np.cumsum(dbl_area)
    picked = np.minimum(np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right"), len(cdf) - 1)
    return points, picked


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance from each point to the other cloud's nearest, both ways, averaged."""
    d = np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T, 0)
    return float(np.sqrt(d.min(axis=1)).mean() + np.sqrt(d.min(axis=0)).mean()) / 2


# ------------------------------------------------------------------------------------------------ ModelNet40


def bench_modelnet_txt(repeats: int) -> dict:
    import trimesh

    from clip2point_hf.point_files import read_point_cloud

    files = sorted((SHARED / "modelnet40_normal_resampled_subset").glob("*/*.txt"))
    ok = 0
    for path in files:
        ok += len(read_point_cloud(path)) == len(np.loadtxt(path, delimiter=","))
    failures = {}
    for label, kwargs in (("by extension", {}), ("forced file_type='xyz'", {"file_type": "xyz"})):
        read = 0
        for path in files:
            try:
                trimesh.load(path, **kwargs)
                read += 1
            except Exception as error:
                failures[label] = f"{type(error).__name__}: {error}"
        failures[label] = {"read": read, "error": failures.get(label)}
    times = timed({"ours": lambda: [read_point_cloud(p) for p in files]}, repeats)
    return {
        "files": len(files),
        "ours_read": ok,
        "ms_per_file": 1e3 * times["ours"] / len(files),
        "trimesh": failures,
    }


# ------------------------------------------------------------------------------------------------ edge cases


def fan(polygons) -> np.ndarray:
    """Polygons as triangle fans, as every reader here triangulates them."""
    return np.array([(p[0], p[k], p[k + 1]) for p in polygons for k in range(1, len(p) - 1)])


def edge_cases(folder: Path) -> list[tuple[str, Path, tuple | None]]:
    """``(name, file, expected (vertices, faces) or None for a file that must be refused)``."""
    from test_data_helpers import CUBE_QUADS, CUBE_TRIS, CUBE_V, write_obj, write_off, write_ply, write_stl
    from test_data_mesh_io import BAD_FILES
    from test_file_formats import expected_world, glb_bytes, gltf_parts

    cube, cube_quads = (CUBE_V, CUBE_TRIS), (CUBE_V, fan(CUBE_QUADS))
    cases = [
        ("OFF", write_off(folder / "plain.off", *cube), cube),
        ("OFF, comments", write_off(folder / "comments.off", *cube, comments=True), cube),
        ("OFF, glued header `OFF8 12 0`", write_off(folder / "glued.off", *cube, glued=True), cube),
    ]
    plain = (folder / "plain.off").read_text().split()
    records = [plain[4 + 3 * i : 7 + 3 * i] for i in range(8)] + [
        plain[28 + 4 * i : 32 + 4 * i] for i in range(12)
    ]
    (folder / "wrapped.off").write_text(
        "OFF\n8 12 0\n" + "".join(f"{' '.join(r[:2])}\n{' '.join(r[2:])}\n" for r in records)
    )
    cases.append(("OFF, records wrapped over lines", folder / "wrapped.off", cube))
    (folder / "coff.off").write_text(
        "COFF\n3 1 0\n0 0 0 255 0 0 255\n1 0 0 9 9 9 255\n0 1 0 9 9 9 255\n3 0 1 2 1 0 0\n"
    )
    corner = (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float), np.array([[0, 1, 2]]))
    cases.append(("COFF, vertex and face colours", folder / "coff.off", corner))
    for style in ("plain", "vt", "vn", "full"):
        for negative in (False, True):
            path = write_obj(
                folder / f"{style}{negative}.obj", CUBE_V, CUBE_QUADS, style=style, negative=negative
            )
            cases.append(
                (f"OBJ quads, `{style}` corners{', negative indices' if negative else ''}", path, cube_quads)
            )
    (folder / "continued.obj").write_text("v 0 0 0\nv 1 0 \\\n0\nv 0 1 0\nf 1 2 3\n")
    cases.append(("OBJ, `\\` line continuation", folder / "continued.obj", corner))
    for fmt in ("ascii", "binary_little_endian", "binary_big_endian"):
        path = write_ply(folder / f"{fmt}.ply", *cube, fmt=fmt, extra_vertex_props=True)
        cases.append((f"PLY {fmt}, colour properties", path, cube))
    mixed = [*CUBE_QUADS[:3], *CUBE_TRIS[6:].tolist()]
    path = write_ply(folder / "mixed.ply", CUBE_V, mixed, fmt="binary_little_endian")
    cases.append(
        (
            "PLY binary, triangles and quads mixed",
            path,
            (CUBE_V, fan(mixed)),
        )
    )
    strip = "ply\nformat ascii 1.0\nelement vertex 4\n" + "".join(f"property float {a}\n" for a in "xyz")
    strip += "element tristrips 1\nproperty list int int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n1 1 0\n4 0 1 2 3\n"
    (folder / "strip.ply").write_text(strip)
    square = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    cases.append(
        ("PLY triangle strip (`tristrips`)", folder / "strip.ply", (square, np.array([[0, 1, 2], [2, 1, 3]])))
    )
    for binary, solid in ((False, False), (True, False), (True, True)):
        path = write_stl(folder / f"stl{binary}{solid}.stl", *cube, binary=binary, solid_header=solid)
        cases.append(
            (
                f"STL {'binary' if binary else 'ASCII'}{', header starts with solid' if solid else ''}",
                path,
                cube,
            )
        )
    first, second = (write_stl(folder / f"part{k}.stl", CUBE_V, CUBE_TRIS[k * 6 : k * 6 + 6]) for k in (0, 1))
    (folder / "bodies.stl").write_text(first.read_text() + second.read_text())
    cases.append(("STL ASCII, two solids", folder / "bodies.stl", cube))
    document, blob = gltf_parts()
    (folder / "scene.glb").write_bytes(glb_bytes(document, blob))
    world = expected_world()
    cases.append(
        (
            "glTF .glb, node transforms (TRS + matrix), scene 1",
            folder / "scene.glb",
            (world.vertices, world.faces),
        )
    )
    (folder / "mesh data.bin").write_bytes(blob)
    (folder / "external.gltf").write_text(
        json.dumps({**document, "buffers": [{"uri": "mesh%20data.bin", "byteLength": len(blob)}]})
    )
    cases.append(
        (
            "glTF .gltf, external buffer `mesh%20data.bin`",
            folder / "external.gltf",
            (world.vertices, world.faces),
        )
    )
    for mode, faces in ((5, [[0, 1, 2], [2, 1, 3]]), (6, [[0, 1, 2], [0, 2, 3]])):
        for scenes in (True, False):
            doc = {
                **document,
                "nodes": [{"mesh": 0}],
                "scenes": [{"nodes": [0]}] if scenes else [],
                "scene": 0,
            }
            doc["meshes"] = [{"primitives": [{"attributes": {"POSITION": 0}, "mode": mode}]}]
            name = f"{'strip' if mode == 5 else 'fan'}{scenes}.glb"
            (folder / name).write_bytes(glb_bytes(doc, blob))
            label = f"glTF triangle {'strip' if mode == 5 else 'fan'}{'' if scenes else ', no scenes'}"
            cases.append(
                (
                    label,
                    folder / name,
                    (np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float), np.array(faces)),
                )
            )
    for name, (data, problem) in sorted(BAD_FILES.items()):
        if name.endswith((".off", ".obj", ".ply", ".stl")):
            (folder / f"bad_{name}").write_bytes(data)
            cases.append((f"bad: {name} ({problem})", folder / f"bad_{name}", None))
    for name, writer, cut in (("stl", write_stl, 30), ("ply", write_ply, 40)):
        path = writer(
            folder / f"cut.{name}",
            *cube,
            **({"binary": True} if name == "stl" else {"fmt": "binary_little_endian"}),
        )
        path.write_bytes(path.read_bytes()[:-cut])
        cases.append((f"bad: binary {name.upper()} cut short by {cut} bytes", path, None))
    return cases


def bench_edge_cases(folder: Path) -> list[dict]:
    rows = []
    for name, path, expected in edge_cases(folder):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows.append(
                {
                    "case": name,
                    "ours": outcome(ours, path, expected),
                    "trimesh": outcome(theirs, path, expected),
                }
            )
    return rows


# ------------------------------------------------------------------------------------------------ large files


def bench_large(folder: Path, repeats: int) -> list[dict]:
    from test_data_helpers import write_obj, write_off, write_ply, write_stl

    n = 200
    grid = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) / n
    vertices = np.c_[grid, 0.1 * np.sin(10 * grid[:, 0]) * np.cos(7 * grid[:, 1])]
    index = np.arange(n * n).reshape(n, n)
    a, b, c, d = (index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:])
    faces = np.r_[np.c_[a.ravel(), b.ravel(), c.ravel()], np.c_[a.ravel(), c.ravel(), d.ravel()]]
    files = {
        "OFF": write_off(folder / "grid.off", vertices, faces),
        "OBJ": write_obj(folder / "grid.obj", vertices, faces),
        "PLY ascii": write_ply(folder / "grid_ascii.ply", vertices, faces),
        "PLY binary": write_ply(folder / "grid.ply", vertices, faces, fmt="binary_little_endian"),
        "STL ascii": write_stl(folder / "grid_ascii.stl", vertices, faces),
        "STL binary": write_stl(folder / "grid.stl", vertices, faces, binary=True),
    }
    rows = []
    for fmt, path in files.items():
        times = timed({"ours": lambda p=path: ours(p), "trimesh": lambda p=path: theirs(p)}, repeats)
        same = same_triangles(ours(path), theirs(path))
        rows.append(
            {
                "format": fmt,
                "mib": path.stat().st_size / 2**20,
                "same": same,
                **{k: 1e3 * t for k, t in times.items()},
            }
        )
    return rows


def import_time(repeats: int) -> float:
    code = "import numpy, time; t = time.perf_counter(); import trimesh; print(time.perf_counter() - t)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(repeats)
    ]
    return 1e3 * statistics.median(runs)


# ------------------------------------------------------------------------------------------------ report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    import trimesh

    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
            f"Python {platform.python_version()}, numpy {np.__version__}, trimesh {trimesh.__version__}",
            "shrec16": bench_shrec(args.repeats),
            "modelnet40_txt": bench_modelnet_txt(args.repeats),
            "edge_cases": bench_edge_cases(Path(tmp)),
            "large": bench_large(Path(tmp), args.repeats),
            "import_trimesh_ms": import_time(args.repeats),
        }
    print(f"machine: {results['machine']}\n")
    s = results["shrec16"]
    print("| SHREC'16, 600 OBJ | ours | trimesh |\n|---|---:|---:|")
    print(f"| files read | {s['read']['ours']} | {s['read']['trimesh']} |")
    print(f"| same triangles as the other | {s['same_triangles']} | {s['same_triangles']} |")
    print(
        f"| ms per file (median of {args.repeats}) | {s['ms_per_file']['ours']:.2f} | {s['ms_per_file']['trimesh']:.2f} |"
    )
    sampling = s["sampling"]
    print(
        "| sampling 2048 points: face counts vs area weights, total variation (mean) | "
        f"{sampling['ours']['tv']:.4f} | {sampling['trimesh']['tv']:.4f} |"
    )
    print(
        "| sampling: 2nd moment about the centroid / exact, minus 1: mean (bias) +- standard error | "
        + " | ".join(
            f"{sampling[k]['moment_bias']:+.4f} +- {sampling[k]['moment_bias_se']:.4f}" for k in sampling
        )
        + " |"
    )
    print(
        "| sampling: the same, mean of its absolute value | "
        + " | ".join(f"{sampling[k]['moment_error']:.4f}" for k in sampling)
        + " |"
    )
    print(
        f"| sampling, ms per mesh | {s['sampling_ms_per_mesh']['ours']:.2f} | {s['sampling_ms_per_mesh']['trimesh']:.2f} |"
    )
    print(
        f"\nChamfer distance / radius, ours vs trimesh: {s['chamfer_ours_vs_trimesh']:.4f}; "
        f"ours seed 0 vs seed 1: {s['chamfer_ours_seed0_vs_seed1']:.4f}\n"
    )
    m = results["modelnet40_txt"]
    print(
        f"ModelNet40 normal_resampled txt: ours read {m['ours_read']}/{m['files']} ({m['ms_per_file']:.2f} ms per file); "
        + "; ".join(f"trimesh {k}: {v['read']}/{m['files']} ({v['error']})" for k, v in m["trimesh"].items())
        + "\n"
    )
    print("| edge case | ours | trimesh |\n|---|---|---|")
    for row in results["edge_cases"]:
        print(f"| {row['case']} | {row['ours']} | {row['trimesh']} |")
    print(
        "\n| 40,000 vertices, 79,202 triangles | MiB | ours ms | trimesh ms | same triangles |\n|---|---:|---:|---:|---|"
    )
    for row in results["large"]:
        print(
            f"| {row['format']} | {row['mib']:.1f} | {row['ours']:.0f} | {row['trimesh']:.0f} | {row['same']} |"
        )
    print(f"\n`import trimesh` (numpy already imported): {results['import_trimesh_ms']:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
