"""glTF 2.0 reader (``.glb``; ``.gltf`` with external files or ``data:`` buffers): the default scene's triangles.

A reader of our own: trimesh reads most glTF files, but drops triangle-fan primitives without a word, fails
on a document without scenes and on a percent-encoded buffer uri (BENCHMARKS.md, "Reading files"); pygltflib
parses only the JSON. It is a scene graph to walk, so it has its own module; it builds on ``mesh_io``'s
:class:`~clip2point_hf.mesh_io.Mesh` and checks. Flat: it travels into Hub folders with the pipeline.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from .errors import DatasetFormatError
from .mesh_io import Mesh, checked_mesh, read_file_bytes

__all__ = ["read_gltf"]

_GLB_MAGIC, _GLB_JSON, _GLB_BIN = b"glTF", 0x4E4F534A, 0x004E4942
_GLTF_COMPONENTS = {5120: "i1", 5121: "u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
_GLTF_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_GLTF_UNDECODED = {  # geometry these extensions hold is not in plain accessors
    "KHR_draco_mesh_compression": "Draco-compressed geometry",
    "EXT_meshopt_compression": "meshopt-compressed buffers",
}


def read_gltf(path: str | Path) -> Mesh:
    """Read the triangles of a glTF 2.0 file (``.glb``, or ``.gltf`` with embedded or external buffers).

    Every triangle primitive (modes triangles, strip, fan; points and lines are skipped) of every mesh
    instanced by the nodes of the default scene, placed by its node's world transform (``matrix`` or
    translation/rotation/scale, composed down the node tree). Coordinates are kept as stored: glTF is
    y-up by its specification, the renderer's convention.
    """
    path = Path(path)
    document, binary_chunk = _gltf_document(path, read_file_bytes(path))
    try:
        return _gltf_mesh(path, document, binary_chunk)
    except DatasetFormatError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:  # a missing or mistyped JSON property
        raise DatasetFormatError(path, f"corrupt glTF document ({type(exc).__name__}: {exc})") from None


def _gltf_document(path: Path, data: bytes) -> tuple[dict, bytes | None]:
    """The JSON document and the GLB binary chunk (None for a ``.gltf`` text file)."""
    binary = None
    if data[:4] == _GLB_MAGIC:
        if len(data) < 20:
            raise DatasetFormatError(path, f"truncated GLB file ({len(data)} bytes, the header needs 20)")
        version, length = (int.from_bytes(data[k : k + 4], "little") for k in (4, 8))
        if version != 2:
            raise DatasetFormatError(
                path, f"GLB container version {version} is not supported (only glTF 2.0)"
            )
        if length > len(data):
            raise DatasetFormatError(
                path, f"truncated GLB file: the header declares {length} bytes, it has {len(data)}"
            )
        chunks, offset = {}, 12
        while offset + 8 <= length:
            size, kind = (int.from_bytes(data[offset + k : offset + k + 4], "little") for k in (0, 4))
            if offset + 8 + size > length:
                raise DatasetFormatError(
                    path, f"truncated GLB file: a chunk of {size} bytes at offset {offset} ends past the file"
                )
            chunks.setdefault(kind, data[offset + 8 : offset + 8 + size])
            offset += 8 + size
        if _GLB_JSON not in chunks:
            raise DatasetFormatError(path, "GLB file without a JSON chunk")
        text, binary = chunks[_GLB_JSON], chunks.get(_GLB_BIN)
    elif path.suffix.lower() == ".glb":
        raise DatasetFormatError(path, f"not a GLB file (starts with {data[:4]!r}, expected b'glTF')")
    else:
        text = data
    try:
        document = json.loads(text.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DatasetFormatError(path, f"the glTF JSON does not parse ({exc})") from None
    if not isinstance(document, dict):
        raise DatasetFormatError(path, "the glTF JSON is not an object")
    version = str(document.get("asset", {}).get("version", "?"))
    if not version.startswith("2."):
        raise DatasetFormatError(path, f"glTF version {version} is not supported (only 2.0)")
    _gltf_check_extensions(path, document.get("extensionsRequired", []))
    return document, binary


def _gltf_check_extensions(path: Path, names) -> None:
    for name in names:
        if name in _GLTF_UNDECODED:
            raise DatasetFormatError(
                path,
                f"uses {name} ({_GLTF_UNDECODED[name]}), which this reader does not decode; export without it",
            )


def _gltf_mesh(path: Path, doc: dict, binary: bytes | None) -> Mesh:
    buffers: dict[int, bytes] = {}

    def buffer(index: int) -> bytes:
        if index not in buffers:
            buffers[index] = _gltf_buffer(path, doc["buffers"][index], index, binary)
        return buffers[index]

    vertices, faces, count = [], [], 0
    for mesh_index, matrix in _gltf_scene_meshes(path, doc):
        for primitive in doc["meshes"][mesh_index]["primitives"]:
            mode = primitive.get("mode", 4)
            if mode not in (4, 5, 6):  # points and lines have no surface
                continue
            _gltf_check_extensions(path, primitive.get("extensions", {}))
            positions = _gltf_accessor(path, doc, buffer, primitive["attributes"]["POSITION"], ("VEC3",))
            if "indices" in primitive:
                index = _gltf_accessor(path, doc, buffer, primitive["indices"], ("SCALAR",))[:, 0].astype(
                    np.int64
                )
            else:
                index = np.arange(len(positions), dtype=np.int64)
            tris = _gltf_triangles(index, mode)
            if len(tris) and (tris.min() < 0 or tris.max() >= len(positions)):
                raise DatasetFormatError(
                    path,
                    f"mesh {mesh_index}: index out of range (max {int(tris.max())}, {len(positions)} positions)",
                )
            vertices.append(positions @ matrix[:3, :3].T + matrix[:3, 3])
            faces.append(tris + count)
            count += len(positions)
    if not faces:
        raise DatasetFormatError(path, "glTF file has no triangle meshes in its default scene")
    return checked_mesh(path, np.concatenate(vertices), np.concatenate(faces), "glTF")


def _gltf_buffer(path: Path, spec: dict, index: int, binary: bytes | None) -> bytes:
    uri = spec.get("uri")
    if uri is None:
        if binary is None:
            raise DatasetFormatError(path, f"buffer {index} has no uri and the file has no GLB binary chunk")
        data = binary
    elif uri.startswith("data:"):
        try:
            data = base64.b64decode(uri.split(",", 1)[1], validate=True)
        except (IndexError, ValueError):
            raise DatasetFormatError(path, f"buffer {index}: the embedded data: uri is not base64") from None
    else:
        external = path.parent / unquote(uri)
        if not external.is_file():
            raise DatasetFormatError(path, f"buffer {index}: file {uri!r} not found next to it")
        data = external.read_bytes()
    if len(data) < spec.get("byteLength", 0):
        raise DatasetFormatError(path, f"buffer {index} has {len(data)} bytes, declares {spec['byteLength']}")
    return data


def _gltf_accessor(path: Path, doc: dict, buffer, index: int, types: tuple[str, ...]) -> np.ndarray:
    """Accessor ``index`` as float64 ``(count, width)`` (normalized integers scaled to [0, 1] or [-1, 1])."""
    accessor = doc["accessors"][index]
    if accessor["type"] not in types:
        raise DatasetFormatError(
            path, f"accessor {index} is {accessor['type']}, expected {' or '.join(types)}"
        )
    if "sparse" in accessor:
        raise DatasetFormatError(path, f"accessor {index} is sparse, which this reader does not support")
    kind, width, count = accessor["componentType"], _GLTF_WIDTHS[accessor["type"]], int(accessor["count"])
    if kind not in _GLTF_COMPONENTS:
        raise DatasetFormatError(path, f"accessor {index} has unknown componentType {kind}")
    dtype = np.dtype(_GLTF_COMPONENTS[kind])
    if "bufferView" not in accessor:  # all zeros, by the specification
        return np.zeros((count, width))
    view = doc["bufferViews"][accessor["bufferView"]]
    data = buffer(view["buffer"])
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    stride = view.get("byteStride") or dtype.itemsize * width
    end = start + (stride * (count - 1) + dtype.itemsize * width if count else 0)
    if end > view.get("byteOffset", 0) + view["byteLength"] or end > len(data):
        raise DatasetFormatError(path, f"accessor {index} reads past the end of its buffer view")
    values = np.ndarray((count, width), dtype, buffer=data, offset=start, strides=(stride, dtype.itemsize))
    values = values.astype(np.float64)
    if accessor.get("normalized") and dtype.kind in "iu":
        values = np.maximum(values / np.iinfo(dtype).max, -1.0)
    return values


def _gltf_triangles(index: np.ndarray, mode: int) -> np.ndarray:
    """Triangles of an index list: mode 4 triangles, 5 strip (every other one flipped), 6 fan."""
    if mode == 4:
        return index[: len(index) - len(index) % 3].reshape(-1, 3)
    k = np.arange(max(len(index) - 2, 0))
    if mode == 5:
        even = k % 2 == 0
        return np.stack(
            [
                np.where(even, index[k], index[k + 1]),  # the specification's order: odd ones start at i + 1
                np.where(even, index[k + 1], index[k]),
                index[k + 2],
            ],
            1,
        )
    return np.stack([np.full(len(k), index[0] if len(index) else 0), index[k + 1], index[k + 2]], 1)


def _gltf_scene_meshes(path: Path, doc: dict):
    """``(mesh index, 4x4 world matrix)`` for every node with a mesh in the default scene (the ``scene``
    property, else the first scene; without scenes, every root node)."""
    nodes = doc.get("nodes", [])
    if doc.get("scenes"):
        roots = doc["scenes"][doc.get("scene", 0)].get("nodes", [])
    else:
        children = {c for node in nodes for c in node.get("children", [])}
        roots = [k for k in range(len(nodes)) if k not in children]
    stack, visited = [(k, np.eye(4)) for k in roots], 0
    while stack:
        k, parent = stack.pop()
        visited += 1
        if visited > 100 * max(len(nodes), 1):
            raise DatasetFormatError(path, "the glTF node tree has a cycle")
        node = nodes[k]
        world = parent @ _gltf_local_matrix(node)
        if "mesh" in node:
            yield node["mesh"], world
        stack.extend((c, world) for c in node.get("children", []))


def _gltf_local_matrix(node: dict) -> np.ndarray:
    """A node's local transform: its column-major ``matrix``, else T @ R @ S."""
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T
    x, y, z, w = node.get("rotation", (0.0, 0.0, 0.0, 1.0))
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * np.asarray(node.get("scale", (1.0, 1.0, 1.0)), dtype=np.float64)
    matrix[:3, 3] = node.get("translation", (0.0, 0.0, 0.0))
    return matrix
