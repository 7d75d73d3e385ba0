"""Writers of small files in every format the data loaders read (imported by the test_data_* tests).

This module holds no tests itself.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

SHARED_DATA = (Path(__file__).resolve().parent.parent / ".." / "shared" / "data").resolve()

# A unit cube: 8 vertices, 6 quads (12 triangles), total area 6.
CUBE_V = np.array(
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=np.float64
)
CUBE_QUADS = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [2, 3, 7, 6], [1, 2, 6, 5], [0, 4, 7, 3]]
CUBE_TRIS = np.array(
    [t for q in CUBE_QUADS for t in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))], dtype=np.int64
)


def tetra(scale: float = 1.0, offset=(0.0, 0.0, 0.0)):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64) * scale + np.asarray(offset)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int64)
    return v, f


def write_off(path, v, f, *, glued: bool = False, comments: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    if glued:
        lines.append(f"OFF{len(v)} {len(f)} 0")
    else:
        lines.append("OFF")
        if comments:
            lines.append("# written by the tests")
        lines.append(f"{len(v)} {len(f)} 0")
    lines += [" ".join(f"{x:.9g}" for x in row) for row in v]
    lines += [f"{len(face)} " + " ".join(str(int(i)) for i in face) for face in f]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_obj(path, v, f, *, style: str = "plain", negative: bool = False) -> Path:
    """``style``: ``plain`` (``f 1 2 3``), ``vt``, ``vn`` (``1//1``) or ``full`` (``1/1/1``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# test", "o thing", "mtllib none.mtl"]
    lines += [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in v]
    lines += ["vt 0 0", "vn 0 0 1", "s off", "usemtl none"]
    n = len(v)
    for face in f:
        corners = []
        for i in face:
            k = int(i) - n if negative else int(i) + 1
            corners.append({"plain": f"{k}", "vt": f"{k}/1", "vn": f"{k}//1", "full": f"{k}/1/1"}[style])
        lines.append("f " + " ".join(corners))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ply(path, v, f, *, fmt: str = "ascii", extra_vertex_props: bool = False) -> Path:
    """``fmt``: ``ascii``, ``binary_little_endian`` or ``binary_big_endian``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = [
        "ply",
        f"format {fmt} 1.0",
        "comment test",
        f"element vertex {len(v)}",
        "property float x",
        "property float y",
        "property float z",
    ]
    if extra_vertex_props:
        head += ["property uchar red", "property uchar green", "property uchar blue"]
    head += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    if fmt == "ascii":
        body = []
        for row in v:
            s = " ".join(f"{x:.9g}" for x in row)
            body.append(s + (" 10 20 30" if extra_vertex_props else ""))
        body += [f"{len(face)} " + " ".join(str(int(i)) for i in face) for face in f]
        path.write_text("\n".join(head) + "\n" + "\n".join(body) + "\n")
        return path
    e = "<" if fmt == "binary_little_endian" else ">"
    out = bytearray(("\n".join(head) + "\n").encode())
    for row in v:
        out += struct.pack(e + "3f", *row)
        if extra_vertex_props:
            out += struct.pack("3B", 10, 20, 30)
    for face in f:
        out += struct.pack(e + "B" + "i" * len(face), len(face), *[int(i) for i in face])
    path.write_bytes(bytes(out))
    return path


def write_stl(path, v, f, *, binary: bool = False, solid_header: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tris = np.asarray(v, dtype=np.float64)[np.asarray(f)]
    if binary:
        header = (b"solid binary-with-a-misleading-header" if solid_header else b"binary stl").ljust(80, b" ")
        out = bytearray(header) + struct.pack("<I", len(tris))
        for t in tris:
            out += struct.pack("<12fH", 0, 0, 0, *t.reshape(-1), 0)
        path.write_bytes(bytes(out))
        return path
    lines = ["solid test"]
    for t in tris:
        lines += ["  facet normal 0 0 0", "    outer loop"]
        lines += [f"      vertex {x:.9g} {y:.9g} {z:.9g}" for x, y, z in t]
        lines += ["    endloop", "  endfacet"]
    lines.append("endsolid test")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mesh(path, v, f) -> Path:
    """Write by extension with default options."""
    ext = Path(path).suffix.lower()
    return {".off": write_off, ".obj": write_obj, ".ply": write_ply, ".stl": write_stl}[ext](path, v, f)


def make_mesh_folder(
    root, classes=("box", "pyramid"), per_split=None, formats=(".obj", ".off", ".ply", ".stl")
) -> Path:
    """``root/<class>/{train,test}/m<k>.<ext>``: boxes and tetrahedra of varied sizes in all formats."""
    per_split = per_split or {"train": 4, "test": 2}
    root = Path(root)
    k = 0
    for ci, cls in enumerate(classes):
        for split, n in per_split.items():
            for j in range(n):
                scale = 1.0 + 0.25 * j + 0.1 * ci
                if ci % 2 == 0:
                    v, f = CUBE_V * np.array([scale, 1.0, 0.5]), CUBE_TRIS
                else:
                    v, f = tetra(scale)
                write_mesh(root / cls / split / f"m{j}{formats[k % len(formats)]}", v, f)
                k += 1
    return root


def make_normal_resampled(
    root, classes=("chair", "night_stand"), n_per_class=3, points=64, list_extra=()
) -> Path:
    """A tiny ``modelnet40_normal_resampled``-style release (40 listed class names, few present)."""
    from clip2point_hf.data import MODELNET40_CLASSES

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    rng = np.random.default_rng(0)
    train, test = [], []
    for cls in classes:
        for i in range(1, n_per_class + 1):
            name = f"{cls}_{i:04d}"
            pts = rng.normal(size=(points, 3))
            nrm = pts / np.linalg.norm(pts, axis=1, keepdims=True)
            d = root / cls
            d.mkdir(exist_ok=True)
            (d / f"{name}.txt").write_text(
                "\n".join(",".join(f"{x:.6f}" for x in np.r_[p, n]) for p, n in zip(pts, nrm)) + "\n"
            )
            (train if i < n_per_class else test).append(name)
    (root / "modelnet40_train.txt").write_text("\n".join(train + list(list_extra)) + "\n")
    (root / "modelnet40_test.txt").write_text("\n".join(test) + "\n")
    (root / "filelist.txt").write_text(
        "\n".join(f"{n.rsplit('_', 1)[0]}/{n}.txt" for n in train + test) + "\n"
    )
    return root


def make_modelnet_h5(root, n_train=(5, 3), n_test=(4,), points=32, with_json=True) -> Path:
    import h5py

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    from clip2point_hf.data import MODELNET40_CLASSES

    (root / "shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    for split, sizes in (("train", n_train), ("test", n_test)):
        names = []
        for k, n in enumerate(sizes):
            fn = f"ply_data_{split}{k}.h5"
            with h5py.File(root / fn, "w") as f:
                f["data"] = rng.normal(size=(n, points, 3)).astype(np.float32)
                f["label"] = rng.integers(0, 40, size=(n, 1)).astype(np.uint8)
                f["normal"] = rng.normal(size=(n, points, 3)).astype(np.float32)
            names.append(f"data/modelnet40_ply_hdf5_2048/{fn}")
            if with_json:
                (root / f"ply_data_{split}_{k}_id2file.json").write_text(
                    json.dumps([f"chair/chair_{split}{k}_{i:04d}.ply" for i in range(n)])
                )
        (root / f"{split}_files.txt").write_text("\n".join(names) + "\n")
    return root


def make_scanobjectnn(root, n_train=6, n_test=4, points=40) -> Path:
    import h5py

    root = Path(root)
    rng = np.random.default_rng(2)
    files = {
        "main_split": [
            "training_objectdataset.h5",
            "test_objectdataset.h5",
            "training_objectdataset_augmentedrot_scale75.h5",
            "test_objectdataset_augmentedrot_scale75.h5",
        ],
        "main_split_nobg": ["training_objectdataset.h5", "test_objectdataset.h5"],
    }
    for sub, names in files.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for fn in names:
            n = n_train if fn.startswith("training") else n_test
            with h5py.File(root / sub / fn, "w") as f:
                f["data"] = rng.normal(size=(n, points, 3)).astype(np.float32)
                f["label"] = rng.integers(0, 15, size=(n,)).astype(np.int64)
                f["mask"] = np.zeros((n, points), dtype=np.int64)
    return root


def make_pairs_release(pc_root, render_root, ids, *, points=64, views=10, size=32, rgba=False) -> None:
    """Point-BERT-style ``shapenet_pc`` + ``ShapeNet-55`` lists, and ``<synset>_<model>/{0..9}.png``."""
    from PIL import Image

    pc_root, render_root = Path(pc_root), Path(render_root)
    (pc_root / "shapenet_pc").mkdir(parents=True, exist_ok=True)
    (pc_root / "ShapeNet-55").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for oid in ids:
        np.save(pc_root / "shapenet_pc" / f"{oid}.npy", rng.normal(size=(points, 3)).astype(np.float32))
        synset, model = oid.split("-", 1)
        d = render_root / f"{synset}_{model}"
        d.mkdir(parents=True, exist_ok=True)
        for v in range(views):
            mode, colour = ("RGBA", (10 * v, 0, 0, 0)) if rgba else ("RGB", (10 * v, 100, 200))
            Image.new(mode, (size, size), colour).save(d / f"{v}.png")
    half = max(1, len(ids) * 2 // 3)
    (pc_root / "ShapeNet-55" / "train.txt").write_text("".join(f"{i}.npy\n" for i in ids[:half]))
    (pc_root / "ShapeNet-55" / "test.txt").write_text("".join(f"{i}.npy\n" for i in ids[half:]))
