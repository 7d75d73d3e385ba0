"""Image-depth pre-training pairs from any folder of meshes, in the ShapeNet renderings layout.

:func:`build_render_pairs` samples every mesh once (seeded, area-weighted, with face normals), renders
10 shaded views per object with the project's own point renderer
(:class:`~clip2point_hf.rendering_clip2point.DepthRenderer`, the reference's view angles) and writes::

    <out>/rendering/<class>_<model>/{0..9}.png   224 x 224 RGB, white background
    <out>/shapenet_pc/<class>-<model>.npy        (num_points, 3) float32, y-up, in the unit sphere
    <out>/ShapeNet-55/<split>.txt                "<class>-<model>.npy" per line (train.txt, test.txt, ...)
    <out>/clip2point_pairs.json                  class names, up axis, views, provenance

so that ``load_shapenet_pairs(out, out)`` reads it directly, exactly like Point-BERT's ShapeNet-55 and
the CLIP2Point renderings.

Shading: each pixel shows the nearest sampled point (``RasterOutput.point_index``) lit by a headlight:
``albedo * (ambient + (1 - ambient) * |n . v|)`` with ``n`` the mesh face normal of that point and ``v``
the viewing direction (two-sided, so inconsistent face winding does not matter).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import replace_folder, work_folder
from ..errors import DatasetFormatError
from ..mesh_io import sample_surface
from ..point_files import MESH_EXTENSIONS, read_mesh
from ..points_clip2point import UP_AXES
from ..prompts import prompt_names
from ..seeding import seeded_rng
from ._common import (
    ON_MISSING,
    check_choice,
    check_num_points,
    check_root,
    check_seed,
    resolve_num_proc,
    run_tasks,
)
from .mesh_folder import scan_mesh_folder
from .shapenet import PAIRS_META_FILE

__all__ = ["build_render_pairs", "shade_views"]


def _object_id(rel: str, cls: str, split: str) -> tuple[str, str]:
    """``(<class>, <model>)`` for a mesh at ``<class>/<split>/.../<name>.<ext>``; ``-`` cannot occur in
    the class part (it separates class and model in the file names)."""
    parts = Path(rel).with_suffix("").parts[1:]
    if parts and parts[0] == split:
        parts = parts[1:]
    model = "_".join(parts) if parts else Path(rel).stem
    return cls.replace("-", "_"), model


def _assign_ids(root: Path, splits: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str, str, str]]:
    """``(split, rel, object_id, render_dir)`` per mesh; ids that clash (the same file name in two splits,
    or with two extensions) get the split, then the extension, added to the model part."""
    entries = []
    for split, items in splits.items():
        for rel, cls in items:
            c, model = _object_id(rel, cls, split)
            entries.append([split, rel, c, model])
    for extra in ("split", "ext"):
        count: dict[tuple[str, str], int] = {}
        for e in entries:
            count[(e[2], e[3])] = count.get((e[2], e[3]), 0) + 1
        for e in entries:
            if count[(e[2], e[3])] > 1:
                e[3] = (
                    f"{e[0]}_{e[3]}"
                    if extra == "split"
                    else f"{e[3]}_{Path(e[1]).suffix.lstrip('.').lower()}"
                )
    seen: dict[str, str] = {}
    jobs = []
    for split, rel, c, model in entries:
        oid, rname = f"{c}-{model}", f"{c}_{model}"
        for name in (oid, "rendering/" + rname):
            if name in seen:
                raise DatasetFormatError(
                    root / rel, f"output name {name!r} clashes with that of {seen[name]}"
                )
            seen[name] = rel
        jobs.append((split, rel, oid, rname))
    return jobs


def _shade(point_index, normals, view_dirs, albedo, ambient, background) -> torch.Tensor:
    """Channels-last float RGB ``(B, V, S, S, 3)``: per-point, per-view Lambert terms, then one gather."""
    b, v, s, _ = point_index.shape
    lam = torch.einsum("bnc,vc->bvn", normals.float(), view_dirs.float()).abs()  # (B, V, N)
    shade = ambient + (1.0 - ambient) * lam
    idx = point_index.reshape(b, v, s * s)
    val = torch.gather(shade, 2, idx.clamp(min=0))  # (B, V, S*S)
    rgb = val[..., None] * torch.tensor(albedo, dtype=val.dtype)
    rgb = torch.where((idx < 0)[..., None], torch.tensor(background, dtype=val.dtype), rgb)
    return rgb.clamp_(0, 1).reshape(b, v, s, s, 3)


def _shade_uint8(point_index, normals, view_dirs, albedo, ambient) -> torch.Tensor:
    """Like :func:`_shade` on a white background, straight to uint8 ``(B, V, S, S, 3)``: the grey level
    ``round(255 * shade)`` indexes a 257-row colour table (row 256: the white background)."""
    b, v, s, _ = point_index.shape
    lam = torch.einsum("bnc,vc->bvn", normals.float(), view_dirs.float()).abs()
    level = (255.0 * (ambient + (1.0 - ambient) * lam)).add_(0.5).clamp_(0, 255).long()  # (B, V, N)
    idx = point_index.reshape(b, v, s * s)
    grey = torch.gather(level, 2, idx.clamp(min=0))
    grey = torch.where(idx < 0, torch.full_like(grey, 256), grey)
    table = (
        torch.arange(256, dtype=torch.float64)[:, None] * torch.tensor(albedo, dtype=torch.float64)[None]
    ).add_(0.5)
    table = torch.cat([table.clamp_(0, 255).to(torch.uint8), torch.full((1, 3), 255, dtype=torch.uint8)])
    return table[grey].reshape(b, v, s, s, 3)


def shade_views(
    point_index: torch.Tensor,
    normals: torch.Tensor,
    view_dirs: torch.Tensor,
    *,
    albedo: Sequence[float] = (0.78, 0.78, 0.78),
    ambient: float = 0.3,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Headlight Lambertian shading of rasterised points.

    Each foreground pixel gets ``albedo * (ambient + (1 - ambient) * |n . v|)``, with ``n`` the normal of
    the point that won the pixel and ``v`` the view direction (two-sided); background pixels get
    ``background``.

    Args:
        point_index: ``(B, V, S, S)`` long, ``-1`` for background (``DepthRenderer.rasterize``).
        normals: ``(B, N, 3)`` unit normals of the rendered points.
        view_dirs: ``(V, 3)`` unit viewing directions (camera ``z`` axes).

    Returns:
        ``(B, V, 3, S, S)`` float RGB in ``[0, 1]``.
    """
    return _shade(point_index, normals, view_dirs, albedo, ambient, background).permute(0, 1, 4, 2, 3)


def _sample_object(task):
    root, rel, render_points, num_points, seed, up_axis = task
    from ..points_clip2point import convert_up_axis, normalize_point_cloud

    path = Path(root) / rel
    mesh = read_mesh(path)
    pts, normals = sample_surface(mesh, render_points, seeded_rng(seed, rel), return_normals=True, path=path)
    p = torch.from_numpy(pts)
    nrm = torch.from_numpy(normals)
    p, nrm = convert_up_axis(p, up_axis), convert_up_axis(nrm, up_axis)
    p = normalize_point_cloud(p)[0]
    return p, nrm, p[:num_points].numpy().copy()


def _render_batch(task) -> tuple[list[tuple[str, str]], list[str]]:
    """Sample, render, shade and write one batch of meshes into the temporary output folder.

    Returns ``([(split, "<object_id>.npy"), ...] in job order, ["<rel> (<problem>)", ...] skipped)``.
    """
    from PIL import Image

    from ..rendering_clip2point import DepthRenderer, camera_basis

    (
        root,
        tmp,
        jobs,
        render_points,
        num_points,
        seed,
        up_axis,
        views,
        image_size,
        radius,
        albedo,
        ambient,
        on_error,
    ) = task
    tmp = Path(tmp)
    samples, kept, failed = [], [], []
    for job in jobs:
        try:
            samples.append(_sample_object((root, job[1], render_points, num_points, seed, up_axis)))
            kept.append(job)
        except DatasetFormatError as exc:
            if on_error == "error":
                raise
            failed.append(f"{job[1]} ({exc.problem})")
    if not kept:
        return [], failed
    view_t = torch.tensor(views, dtype=torch.float32)
    view_dirs = camera_basis(view_t[:, 0], view_t[:, 1], 1.0).z_axis  # (V, 3)
    renderer = DepthRenderer(image_size=image_size, point_radius=radius)
    pts = torch.stack([x[0] for x in samples])
    nrm = torch.stack([x[1] for x in samples])
    raster = renderer.rasterize(pts, views)
    img = _shade_uint8(raster.point_index, nrm, view_dirs, albedo, ambient).numpy()
    written = []
    for k, (split, _rel, oid, rname) in enumerate(kept):
        d = tmp / "rendering" / rname
        d.mkdir()
        for v in range(img.shape[1]):
            Image.fromarray(img[k, v], mode="RGB").save(d / f"{v}.png", compress_level=3)
        np.save(tmp / "shapenet_pc" / f"{oid}.npy", samples[k][2])
        written.append((split, f"{oid}.npy"))
    return written, failed


def _render_share(tasks: list, num_proc: int | None, processes, tmp: Path) -> list:
    """``_render_batch`` results of every task, in task order. With several processes (`processes`, accelerate's
    state) each renders its share (task ``t`` to process ``t % N``) and leaves its results in ``tmp``; after all
    are done, the main process reads them back (the others get an empty list)."""
    rank, world = (0, 1) if processes is None else (processes.process_index, processes.num_processes)
    mine = list(range(rank, len(tasks), world))
    nproc = max(1, min(resolve_num_proc(num_proc, sum(len(tasks[t][2]) for t in mine)), len(mine)))
    results = list(run_tasks(_render_batch, [tasks[t] for t in mine], nproc, "rendering pairs", "batch"))
    if processes is None:
        return results
    (tmp / f".part-{rank}.json").write_text(json.dumps(dict(zip(mine, results, strict=True))))
    processes.wait_for_everyone()
    if not processes.is_main_process:
        return []
    merged: dict[int, list] = {}
    for part in range(world):
        path = tmp / f".part-{part}.json"
        merged.update({int(t): result for t, result in json.loads(path.read_text()).items()})
        path.unlink()
    return [merged[t] for t in range(len(tasks))]


def build_render_pairs(
    root: str | Path,
    out_dir: str | Path,
    *,
    num_points: int = 8192,
    render_points: int | None = None,
    seed: int = 0,
    up_axis: str = "y",
    views: str | Sequence = "reference10",
    image_size: int = 224,
    point_radius: float = 0.02,
    albedo: Sequence[float] = (0.78, 0.78, 0.78),
    ambient: float = 0.3,
    extensions: Sequence[str] = MESH_EXTENSIONS,
    batch_size: int = 8,
    num_proc: int | None = None,
    on_error: str = "error",
    overwrite: bool = False,
) -> Path:
    """Render 10 shaded views and save the point cloud of every mesh under ``root``, ShapeNet-style.

    Args:
        root: a mesh folder (``<class>/<split>/*.obj|off|ply|stl``, see
            :func:`~clip2point_hf.data.load_mesh_folder`).
        out_dir: created (atomically: written next to it and renamed when complete).
        num_points: points saved per object (Point-BERT's 8192 by default).
        render_points: points sampled per object for rendering (default ``max(num_points, 16384)``,
            dense enough for closed-looking surfaces at 224 px with ``point_radius`` 0.02); the saved
            cloud is the first ``num_points`` of them.
        seed: sampling seed (per mesh: derived from ``seed`` and the mesh's relative path).
        up_axis: the meshes' up axis; everything is rotated to y-up (the renderer's world) first.
        views: a ``VIEW_PRESETS`` name or a list of ``(elevation, azimuth[, distance])``; the default is
            the reference's 10 views, in order ``0.png`` .. ``9.png``.
        image_size, point_radius: renderer settings (224 and 0.02 as in the reference).
        albedo, ambient: shading (grey material, 30 % ambient light).
        batch_size: meshes rendered together.
        num_proc: render processes, each with one torch thread (default: all cores, at most 8, for 64
            meshes or more; 1 per process under ``accelerate launch``). ``1`` renders in this process with
            torch's current thread setting. Output does not depend on it.
        on_error: a mesh that cannot be read or sampled: ``"error"`` (default; nothing is written) or
            ``"skip"`` (a warning lists them).
        overwrite: replace an existing ``out_dir``.

    Under ``accelerate launch`` with N processes (on one machine or several sharing the output's file
    system), process ``r`` renders the batches ``b`` with ``b % N == r`` into one temporary folder and the main
    process writes the lists and renames it once every process is done: the output is the one-process output.

    Returns:
        ``out_dir``. Read it with ``load_shapenet_pairs(out_dir, out_dir)``.
    """
    from accelerate.utils import broadcast_object_list

    from ..distributed import launched_processes
    from ..rendering_clip2point import resolve_views

    num_points = check_num_points(num_points)
    render_points = check_num_points(
        render_points if render_points is not None else max(num_points, 16384), "render_points"
    )
    if render_points < num_points:
        raise ValueError(f"`render_points` ({render_points}) must be >= `num_points` ({num_points})")
    seed = check_seed(seed)
    check_choice(up_axis, UP_AXES, "up_axis")
    check_choice(on_error, ON_MISSING, "on_error")
    root = check_root(root, "mesh folder")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not overwrite:
        raise DatasetFormatError(out_dir, "output folder exists (pass overwrite=True to replace it)")
    classes, splits = scan_mesh_folder(root, extensions=extensions)
    view_list = resolve_views(views).tolist()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")

    jobs = _assign_ids(root, splits)  # (split, rel, object_id, render_dir)

    processes = launched_processes()
    main_process = processes is None or processes.is_main_process
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = [str(work_folder(out_dir))]
    if processes is not None:  # one work folder for all: the main process's
        broadcast_object_list(work)
    tmp = Path(work[0])
    failed: list[str] = []
    try:
        if main_process:
            (tmp / "rendering").mkdir(parents=True)
            (tmp / "shapenet_pc").mkdir()
            (tmp / "ShapeNet-55").mkdir()
        if processes is not None:
            processes.wait_for_everyone()
        lists: dict[str, list[str]] = {s: [] for s in splits}
        settings = (render_points, num_points, seed, up_axis, view_list, image_size, point_radius)
        settings += (tuple(albedo), ambient, on_error)
        tasks = [
            (str(root), str(tmp), jobs[i : i + batch_size], *settings)
            for i in range(0, len(jobs), batch_size)
        ]
        if processes is not None and num_proc is None:
            num_proc = 1  # the launch already runs a process per core or device
        for written, skipped in _render_share(tasks, num_proc, processes, tmp):
            for split, name in written:
                lists[split].append(name)
            failed.extend(skipped)
        if not main_process:
            processes.wait_for_everyone()  # the main process writes the lists and renames the folder
            return out_dir
        for split, names in lists.items():
            (tmp / "ShapeNet-55" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
        for split in ("train", "test"):  # load_shapenet_pairs reads both
            if not (tmp / "ShapeNet-55" / f"{split}.txt").exists():
                (tmp / "ShapeNet-55" / f"{split}.txt").write_text("")
        id_classes = [c.replace("-", "_") for c in classes]
        meta = {
            "dataset": f"{root.name} render pairs",
            "source": str(root),
            "class_names": id_classes,
            "prompt_names": prompt_names(id_classes),
            "up_axis": "y",
            "original_up_axis": up_axis,
            "num_points": num_points,
            "render_points": render_points,
            "seed": seed,
            "views": view_list if not isinstance(views, str) else views,
            "view_angles": view_list,
            "image_size": image_size,
            "point_radius": point_radius,
            "shading": {"albedo": list(albedo), "ambient": ambient, "light": "headlight, two-sided Lambert"},
            "num_objects": {s: len(v) for s, v in lists.items()},
            "skipped": failed,
        }
        (tmp / PAIRS_META_FILE).write_text(json.dumps(meta, indent=2))
        replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if processes is not None:
        processes.wait_for_everyone()
    if failed:
        warnings.warn(
            f"{root}: skipped {len(failed)} meshes that could not be used: {failed[:5]}", stacklevel=2
        )
    return out_dir
