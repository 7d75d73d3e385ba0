"""glTF/GLB, PCD and LAS/LAZ files, written byte by byte here (LAS by laspy itself), read back through
`read_mesh` and `read_point_cloud` and compared with what was written."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest

from clip2point_apps.web import write_preview_glb
from clip2point_hf import CLIP2PointFeatureExtractor, point_io
from clip2point_hf.errors import DatasetFormatError
from clip2point_hf.mesh_io import Mesh, sample_surface
from clip2point_hf.point_files import POINT_FILE_TYPES, read_mesh, read_point_cloud
from clip2point_hf.point_io import lzf_decompress
from clip2point_hf.samples import make_sample_point_cloud
from clip2point_hf.seeding import seeded_rng


def assert_one_line_error(call, path, *fragments):
    with pytest.raises(DatasetFormatError) as info:
        call(path)
    message = str(info.value)
    assert "\n" not in message and os.path.basename(str(path)) in message, message
    for fragment in fragments:
        assert fragment in message, message


# ------------------------------------------------------------------------------------------------- glTF

SQUARE = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)  # primitive 1: indexed
TRIANGLE = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1]], np.float32)  # primitive 2: interleaved with normals
ELSEWHERE = np.array([[100, 100, 100], [101, 100, 100], [100, 101, 100]], np.float32)  # not in the scene


def gltf_parts() -> tuple[dict, bytes]:
    """A document and its binary buffer: one mesh of two triangle primitives (and a line primitive) under
    a child node (matrix: +10 along z) of a root node (TRS: translate (1, 2, 3), 90 degrees about z, scale
    2), in scene 1 (the default); scene 0 holds another mesh."""
    interleaved = np.concatenate([TRIANGLE, np.tile([[0, 0, 1]], (3, 1)).astype(np.float32)], axis=1)
    blob = SQUARE.tobytes() + np.array([0, 1, 2, 0, 2, 3], "<u2").tobytes() + interleaved.tobytes()
    blob += ELSEWHERE.tobytes()
    views = [(0, 48, None), (48, 12, None), (60, 72, 24), (132, 36, None)]
    s = float(np.sqrt(0.5))
    document = {
        "asset": {"version": "2.0"},
        "scene": 1,
        "scenes": [{"nodes": [2]}, {"nodes": [0]}],
        "nodes": [
            {"translation": [1, 2, 3], "rotation": [0, 0, s, s], "scale": [2, 2, 2], "children": [1]},
            {"matrix": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 10, 1], "mesh": 0},
            {"mesh": 1},
        ],
        "meshes": [
            {
                "primitives": [
                    {"attributes": {"POSITION": 0}, "indices": 1},
                    {"attributes": {"POSITION": 2}, "mode": 4},
                    {"attributes": {"POSITION": 0}, "indices": 1, "mode": 1},  # lines: no surface
                ]
            },
            {"primitives": [{"attributes": {"POSITION": 3}}]},
        ],
        "buffers": [{"byteLength": len(blob)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": o, "byteLength": n, **({"byteStride": st} if st else {})}
            for o, n, st in views
        ],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3"},
            {"bufferView": 1, "componentType": 5123, "count": 6, "type": "SCALAR"},
            {"bufferView": 2, "componentType": 5126, "count": 3, "type": "VEC3"},
            {"bufferView": 3, "componentType": 5126, "count": 3, "type": "VEC3"},
        ],
    }
    return document, blob


def expected_world() -> Mesh:
    """The scene's triangles by hand: child +10 z, then scale 2, (x, y) -> (-y, x), then + (1, 2, 3)."""
    local = np.concatenate([SQUARE, TRIANGLE]).astype(np.float64) + np.array([0, 0, 10])
    world = np.stack([-local[:, 1], local[:, 0], local[:, 2]], axis=1) * 2 + [1, 2, 3]
    return Mesh(world, np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6]]))


def glb_bytes(document: dict, blob: bytes) -> bytes:
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    blob += b"\0" * (-len(blob) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(blob), 0x004E4942) + blob
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def test_glb_gltf_external_and_embedded_read_the_scene_with_node_transforms(tmp_path):
    document, blob = gltf_parts()
    (tmp_path / "scene.glb").write_bytes(glb_bytes(document, blob))
    (tmp_path / "mesh data.bin").write_bytes(blob)
    external = {**document, "buffers": [{"uri": "mesh%20data.bin", "byteLength": len(blob)}]}
    (tmp_path / "external.gltf").write_text(json.dumps(external))
    uri = "data:application/octet-stream;base64," + base64.b64encode(blob).decode()
    (tmp_path / "embedded.gltf").write_text(json.dumps({**document, "buffers": [{"uri": uri}]}))
    expected = expected_world()
    for name in ("scene.glb", "external.gltf", "embedded.gltf"):
        mesh = read_mesh(tmp_path / name)
        np.testing.assert_allclose(mesh.vertices, expected.vertices, atol=1e-9, err_msg=name)
        np.testing.assert_array_equal(mesh.faces, expected.faces)

    points = read_point_cloud(tmp_path / "scene.glb", num_points=500, seed=3)
    reference = sample_surface(expected, 500, seeded_rng(3, "scene.glb"))
    np.testing.assert_allclose(points, reference, atol=1e-5)


def test_gltf_strip_fan_and_no_scene(tmp_path):
    document, blob = gltf_parts()
    document = {**document, "scenes": [], "nodes": [{"mesh": 0}]}  # no scenes: every root node
    document["meshes"] = [{"primitives": [{"attributes": {"POSITION": 0}, "mode": 5}]}]
    (tmp_path / "strip.glb").write_bytes(glb_bytes(document, blob))
    np.testing.assert_array_equal(read_mesh(tmp_path / "strip.glb").faces, [[0, 1, 2], [2, 1, 3]])
    document["meshes"] = [{"primitives": [{"attributes": {"POSITION": 0}, "mode": 6}]}]
    (tmp_path / "fan.glb").write_bytes(glb_bytes(document, blob))
    np.testing.assert_array_equal(read_mesh(tmp_path / "fan.glb").faces, [[0, 1, 2], [0, 2, 3]])


def test_preview_glb_of_the_web_page_reads_back(tmp_path):
    vertices = np.array([[0, 0, 0], [2, 0, 0], [0, 3, 0], [0, 0, 4]], np.float64)
    faces = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2]])
    write_preview_glb(tmp_path / "p.glb", vertices, Mesh(vertices, faces), up_axis="y")
    centred = vertices - vertices.mean(axis=0)
    placed = centred / np.linalg.norm(centred, axis=1).max()  # what the preview promises: unit sphere
    mesh = read_mesh(tmp_path / "p.glb")
    np.testing.assert_allclose(mesh.vertices, placed[faces].reshape(-1, 3), atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, np.arange(9).reshape(3, 3))


def test_gltf_bad_files_are_one_line_errors(tmp_path):
    document, blob = gltf_parts()
    good = glb_bytes(document, blob)
    cases = {
        "short.glb": (good[:-10], "truncated GLB"),
        "stl.glb": (b"solid x\nendsolid\n", "not a GLB file"),
        "v1.glb": (glb_bytes({**document, "asset": {"version": "1.0"}}, blob), "only 2.0"),
        "draco.glb": (
            glb_bytes({**document, "extensionsRequired": ["KHR_draco_mesh_compression"]}, blob),
            "KHR_draco_mesh_compression",
        ),
        "lines.glb": (
            glb_bytes(
                {**document, "meshes": [{"primitives": [document["meshes"][0]["primitives"][2]]}]}, blob
            ),
            "no triangle meshes",
        ),
        "past.glb": (
            glb_bytes(
                {
                    **document,
                    "accessors": [{**document["accessors"][0], "count": 400}, *document["accessors"][1:]],
                },
                blob,
            ),
            "past the end",
        ),
        "noattr.glb": (
            glb_bytes({**document, "meshes": [{"primitives": [{}]}]}, blob),
            "corrupt glTF document",
        ),
        "text.gltf": (b"{not json", "does not parse"),
        "missing.gltf": (
            json.dumps({**document, "buffers": [{"uri": "gone.bin"}]}).encode(),
            "'gone.bin' not found",
        ),
    }
    for name, (data, fragment) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert_one_line_error(read_mesh, tmp_path / name, fragment)
        assert_one_line_error(read_point_cloud, tmp_path / name, fragment)


# -------------------------------------------------------------------------------------------------- PCD


def pcd_header(fields, sizes, types, counts, width, height, data) -> bytes:
    lines = [
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(fields),
        "SIZE " + " ".join(map(str, sizes)),
        "TYPE " + " ".join(types),
        "COUNT " + " ".join(map(str, counts)),
        f"WIDTH {width}",
        f"HEIGHT {height}",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {width * height}",
        f"DATA {data}",
    ]
    return ("\n".join(lines) + "\n").encode()


def test_pcd_ascii_drops_nan_points_of_an_organised_cloud(tmp_path):
    rows = "1 2 3 4.2e6\nnan nan nan 0\n-1.5 0.25 8 1\n7 8 9 0\n"
    path = tmp_path / "organised.pcd"
    path.write_bytes(
        pcd_header(["x", "y", "z", "rgb"], [4] * 4, "FFFF", [1] * 4, 2, 2, "ascii") + rows.encode()
    )
    np.testing.assert_array_equal(read_point_cloud(path), [[1, 2, 3], [-1.5, 0.25, 8], [7, 8, 9]])


def test_pcd_binary_with_mixed_types_counts_and_padding(tmp_path):
    points = np.array([[0.5, -2, 3], [4, 5.25, -6], [np.nan, 1, 1]], np.float32)
    body = b"".join(
        struct.pack("<H2xfffii", 7, *p, k, -k)
        for k, p in enumerate(points)  # intensity, _ (2 bytes), x y z, label[2]
    )
    header = pcd_header(
        ["intensity", "_", "x", "y", "z", "label"],
        [2, 1, 4, 4, 4, 4],
        "UUFFFI",
        [1, 2, 1, 1, 1, 2],
        3,
        1,
        "binary",
    )
    path = tmp_path / "binary.pcd"
    path.write_bytes(header + body)
    np.testing.assert_array_equal(read_point_cloud(path), points[:2])


def test_pcd_binary_compressed_with_a_hand_made_lzf_stream(tmp_path):
    x = np.array([1, 2, 3, 4], "<f4")
    z = np.array([5, 6, np.nan, 8], "<f4")
    # Fields are stored one after another: x's 16 bytes, y's (equal to x's) and z's. The LZF stream: a
    # literal run of 16 bytes (control 15), a back-reference of 16 bytes 16 back (control 0b111_00000,
    # length byte 16 - 2 - 7 = 7, offset byte 16 - 1 = 15), a literal run of z's 16 bytes.
    stream = bytes([15]) + x.tobytes() + bytes([0xE0, 7, 15]) + bytes([15]) + z.tobytes()
    body = struct.pack("<II", len(stream), 48) + stream
    path = tmp_path / "compressed.pcd"
    path.write_bytes(pcd_header(["x", "y", "z"], [4] * 3, "FFF", [1] * 3, 4, 1, "binary_compressed") + body)
    np.testing.assert_array_equal(read_point_cloud(path), [[1, 1, 5], [2, 2, 6], [4, 4, 8]])


def test_lzf_overlapping_back_reference_and_corrupt_streams():
    assert lzf_decompress(b"\x00a\x60\x00", 6) == b"aaaaaa"  # "a", then 5 bytes from 1 back (overlapping)
    assert lzf_decompress(b"\x01ab\xe0\x03\x01", 14) == b"ab" * 7  # long form: 7 + 3 + 2 = 12 from 2 back
    for stream, size, fragment in [
        (b"\x05ab", 6, "passes the end"),
        (b"\x00a\x60\x05", 6, "before the start"),
        (b"\x00a\x60", 6, "ends inside"),
        (b"\x00a", 6, "expands to 1 bytes"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            lzf_decompress(stream, size)


def test_pcd_bad_files_are_one_line_errors(tmp_path):
    xyz = pcd_header(["x", "y", "z"], [4] * 3, "FFF", [1] * 3, 2, 1, "binary")
    bad_lzf = struct.pack("<II", 4, 24) + b"\x00a\x60\x05"
    cases = {
        "noz.pcd": (
            pcd_header(["x", "y"], [4] * 2, "FF", [1] * 2, 1, 1, "ascii") + b"1 2\n",
            "no z field",
        ),
        "short.pcd": (xyz + b"\0" * 20, "truncated PCD file"),
        "packed.pcd": (xyz.replace(b"DATA binary", b"DATA zip"), "unknown PCD DATA 'zip'"),
        "nodata.pcd": (b"VERSION 0.7\nFIELDS x y z\n", "no DATA line"),
        "lzf.pcd": (
            xyz.replace(b"DATA binary", b"DATA binary_compressed") + bad_lzf,
            "corrupt PCD compressed",
        ),
        "sizes.pcd": (xyz.replace(b"SIZE 4 4 4", b"SIZE 4 4"), "different lengths"),
        "half.pcd": (xyz.replace(b"SIZE 4 4 4", b"SIZE 2 4 4"), "unknown TYPE/SIZE pairs ['F2']"),
        "nan.pcd": (
            pcd_header(["x", "y", "z"], [4] * 3, "FFF", [1] * 3, 1, 1, "ascii") + b"nan nan nan\n",
            "no points",
        ),
    }
    for name, (data, fragment) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert_one_line_error(read_point_cloud, tmp_path / name, fragment)


# ---------------------------------------------------------------------------------------------- LAS/LAZ


def write_las(path, count: int, version: str = "1.2") -> np.ndarray:
    """``count`` points on LAS's 0.01 grid far from the origin (offsets 1000, 2000, 10); their real
    coordinates."""
    rng = np.random.default_rng(0)
    real = np.round(rng.uniform(-50, 50, (count, 3)), 2) + np.array([1000, 2000, 10])
    write_las_points(path, real, offsets=(1000, 2000, 10), scale=0.01, version=version)
    return real


def write_las_points(path, real: np.ndarray, *, offsets, scale: float, version: str = "1.2") -> None:
    """``real`` coordinates as a LAS or LAZ file (by the suffix), written by laspy itself."""
    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=3 if version == "1.2" else 6, version=version)
    header.scales, header.offsets = np.array([scale] * 3), np.asarray(offsets, dtype=np.float64)
    las = laspy.LasData(header)
    las.x, las.y, las.z = real[:, 0], real[:, 1], real[:, 2]
    las.write(str(path))


@pytest.mark.parametrize("ext", [".las", ".laz"])
def test_las_and_laz_give_real_coordinates(tmp_path, ext):
    real = write_las(tmp_path / f"scan{ext}", 300)
    if ext == ".laz":
        assert (tmp_path / "scan.laz").read_bytes()[:4] == b"LASF"
    np.testing.assert_allclose(read_point_cloud(tmp_path / f"scan{ext}", num_points=300), real, atol=2e-4)


def test_las_sub_sampling_is_seeded_and_the_same_across_chunks(tmp_path, monkeypatch):
    real = write_las(tmp_path / "big.las", 1000)
    first = read_point_cloud(tmp_path / "big.las", num_points=64, seed=5)
    rows = [int(np.argmin(np.abs(real - p).sum(axis=1))) for p in first]
    np.testing.assert_allclose(first, real[rows], atol=2e-4)  # each is one of the file's points
    assert len(set(rows)) == 64 and rows == sorted(rows)  # without replacement, in file order
    monkeypatch.setattr(point_io, "LAS_CHUNK_POINTS", 7)  # many chunks: the same selection
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "big.las", num_points=64, seed=5), first)
    assert not np.array_equal(read_point_cloud(tmp_path / "big.las", num_points=64, seed=6), first)


def test_las_errors_and_missing_libraries_are_one_line(tmp_path, monkeypatch):
    laspy = pytest.importorskip("laspy")
    (tmp_path / "junk.las").write_bytes(b"not a las file at all" * 20)
    assert_one_line_error(read_point_cloud, tmp_path / "junk.las", "cannot read as LAS/LAZ")
    write_las(tmp_path / "scan.laz", 10)
    monkeypatch.setattr(laspy.LazBackend, "detect_available", classmethod(lambda cls: ()))
    assert_one_line_error(
        read_point_cloud, tmp_path / "scan.laz", "needs lazrs", "pip install 'clip2point-hf[las]'"
    )
    monkeypatch.setitem(sys.modules, "laspy", None)  # laspy not installed
    assert_one_line_error(
        read_point_cloud, tmp_path / "scan.laz", "needs laspy", "pip install 'clip2point-hf[las]'"
    )


def with_field(data: bytes, fmt: str, offset: int, value: int) -> bytes:
    """``data`` with one header field (struct format ``fmt`` at byte ``offset``) overwritten."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


# LAS 1.2 header fields: header size at byte 94, start of the points 96, VLR count 100, point count 107; the
# first VLR's record length at 227 + 20. Each damage ended in a hang, a traceback or a numpy/lazrs message.
LAS_DAMAGE = {
    "vlrs.las": (lambda d: with_field(d, "<I", 100, 0xFFFFFFF0), ["declares 4294967280 VLRs"]),
    "vlrs.laz": (lambda d: with_field(d, "<I", 100, 0xFFFFFFF0), ["declares 4294967280 VLRs"]),
    "cut.las": (lambda d: d[:-1000], ["truncated LAS file", "300 points of 34 bytes"]),
    "cut.laz": (lambda d: d[:-100], ["truncated LAZ file", "chunk table"]),
    "stub.las": (lambda d: d[:200], ["truncated LAS file", "200 bytes"]),
    "offset.las": (lambda d: with_field(d, "<I", 96, 10**9), ["points start at byte 1000000000"]),
    "header.las": (lambda d: with_field(d, "<H", 94, 100), ["corrupt LAS header", "says 100"]),
    "count.las": (
        lambda d: with_field(d, "<I", 107, 0xFFFFFFFF),
        ["truncated LAS file", "4294967295 points"],
    ),
    "count.laz": (lambda d: with_field(d, "<I", 107, 10**9), ["1000000000 points", "hold at most 50000"]),
    "vlr.laz": (lambda d: with_field(d, "<H", 227 + 20, 65535), ["VLR 1 of 1 runs past"]),
}


@pytest.mark.parametrize("name", sorted(LAS_DAMAGE))
def test_damaged_las_and_laz_files_are_one_line_errors(tmp_path, name):
    """However the header lies, the header is checked against the file before laspy reads it."""
    damage, fragments = LAS_DAMAGE[name]
    write_las(tmp_path / f"good{name[-4:]}", 300)
    (tmp_path / name).write_bytes(damage((tmp_path / f"good{name[-4:]}").read_bytes()))
    assert_one_line_error(read_point_cloud, tmp_path / name, *fragments)


def test_las14_extended_vlrs_are_not_read(tmp_path):
    """EVLRs hold no points: a LAS 1.4 file whose EVLR count and start lie (0xFFFFFFFF EVLRs at byte 2**63)
    reads its points as if they were right."""
    real = write_las(tmp_path / "good.las", 50, version="1.4")
    data = with_field(
        with_field((tmp_path / "good.las").read_bytes(), "<Q", 235, 2**63), "<I", 243, 0xFFFFFFFF
    )
    (tmp_path / "evlrs.las").write_bytes(data)
    np.testing.assert_allclose(read_point_cloud(tmp_path / "evlrs.las"), real, atol=2e-4)
    (tmp_path / "count.las").write_bytes(with_field(data, "<Q", 247, 2**64 - 1))  # the 64-bit point count
    assert_one_line_error(
        read_point_cloud, tmp_path / "count.las", "corrupt LAS header", "18446744073709551615"
    )


# ------------------------------------------------------------------------------------------- map coordinates

MAP_OFFSET = (5e5, 4e6, 0.0)  # UTM-like: easting, northing


def float32_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "float32" in str(w.message)]


@pytest.mark.parametrize(
    ("ext", "sampling"), [(".npy", "random"), (".npy", "fps"), (".las", "random"), (".laz", "random")]
)
def test_a_chair_at_map_coordinates_renders_as_at_the_origin(tmp_path, ext, sampling):
    """A 1 m chair at (5e5, 4e6, 0) renders the pixels of the same chair at the origin, read from float64 .npy,
    LAS and LAZ: the coordinates stay float64 (LAS: scaled and offset as stored) until they are centred. The two
    differ by float64 rounding of the offset (4e6 * 2**-52 < 1e-9 of a 1 m chair), far below the float32 rounding
    of the normalised cloud (6e-8), so the pixel values agree to 1e-5 (CLIP's std divides by 0.27)."""
    chair = make_sample_point_cloud("chair", num_points=2048, seed=0).astype(np.float64)
    front_end = CLIP2PointFeatureExtractor(views="reference6", image_size=64, sampling=sampling)
    pixels = {}
    for place, offset in (("origin", (0.0, 0.0, 0.0)), ("map", MAP_OFFSET)):
        path = tmp_path / place / f"chair{ext}"  # the same name: the same seeded sampling
        path.parent.mkdir()
        if ext == ".npy":
            np.save(path, chair + offset)
        else:
            write_las_points(path, chair + offset, offsets=offset, scale=1e-4)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            pixels[place] = front_end(read_point_cloud(path, num_points=2048))["pixel_values"]
        assert not float32_warnings(record), place
    np.testing.assert_allclose(pixels["map"], pixels["origin"], atol=1e-5)
    assert pixels["origin"].std() > 0.1  # a chair, not a blank page


def test_float32_that_lost_the_shape_warns_once(tmp_path):
    """Stored as float32 at (5e5, 4e6) a 1 m chair is gone (numbers 0.25 apart): one warning naming the file,
    or the input of the front end. At 1e5 from the origin float32 still holds it (0.0078 apart): no warning."""
    chair = make_sample_point_cloud("chair", num_points=2048, seed=0).astype(np.float64)
    np.save(tmp_path / "map32.npy", (chair + MAP_OFFSET).astype(np.float32))
    np.save(tmp_path / "near32.npy", (chair + np.array([1e5, 1e5, 0])).astype(np.float32))
    front_end = CLIP2PointFeatureExtractor(views="reference6", image_size=64)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        lost = front_end(read_point_cloud(tmp_path / "map32.npy"))["pixel_values"]
    (message,) = float32_warnings(record)
    assert "map32.npy" in message and "0.25 apart" in message and "\n" not in message
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        front_end([(chair + MAP_OFFSET).astype(np.float32)])
        near = front_end(read_point_cloud(tmp_path / "near32.npy"))["pixel_values"]
    (message,) = float32_warnings(record)
    assert message.startswith("point_clouds[0]: float32 numbers near 4e+06")
    origin = front_end(chair)["pixel_values"]  # float32 moves the near chair's points by < 1% of its size:
    assert (near - origin).abs().mean() < 0.25 * (lost - origin).abs().mean()  # its views stay close


# ---------------------------------------------------------------------------------------------- the CLI


def test_every_format_is_in_the_one_list():
    assert {".glb", ".gltf", ".pcd", ".las", ".laz"} <= set(POINT_FILE_TYPES)


def test_cli_classify_reads_glb_and_pcd(tmp_path):
    from clip2point_hf import CLIP2PointModel, CLIP2PointProcessor
    from conftest import make_tiny_config, make_tiny_tokenizer

    model = tmp_path / "model"
    CLIP2PointModel(make_tiny_config(num_views=6)).save_pretrained(model)
    CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(views="reference6", image_size=32), make_tiny_tokenizer()
    ).save_pretrained(model)
    document, blob = gltf_parts()
    (tmp_path / "scene.glb").write_bytes(glb_bytes(document, blob))
    cloud = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    header = pcd_header(["x", "y", "z"], [4] * 3, "FFF", [1] * 3, 300, 1, "binary")
    (tmp_path / "cloud.pcd").write_bytes(header + cloud.tobytes())
    np.save(tmp_path / "cloud.npy", cloud)
    files = [str(tmp_path / n) for n in ("scene.glb", "cloud.pcd", "cloud.npy")]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clip2point_apps.cli",
            "classify",
            *files,
            "--labels",
            "chair,lamp",
            "--model",
            str(model),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert {r["label"] for r in answers[files[0]]} == {"chair", "lamp"}
    pcd, npy = ({r["label"]: r["score"] for r in answers[f]} for f in files[1:])
    assert pcd == pytest.approx(npy, abs=1e-6)  # the .pcd holds the .npy's points (batched together)


def test_mesh_folder_reads_glb_and_gltf(tmp_path):
    from clip2point_hf.data import detect_dataset_format, load_mesh_folder

    document, blob = gltf_parts()
    for cls, split, name in [("a", "train", "m.glb"), ("a", "test", "n.glb"), ("b", "train", "o.gltf")]:
        (tmp_path / cls / split).mkdir(parents=True, exist_ok=True)
        data = glb_bytes(document, blob)  # a binary .gltf is read by its magic, as viewers do
        (tmp_path / cls / split / name).write_bytes(data)
    (tmp_path / "b" / "test").mkdir()
    write_preview_glb(
        tmp_path / "b" / "test" / "p.glb", SQUARE, Mesh(SQUARE.astype(float), np.array([[0, 1, 2]]))
    )
    assert detect_dataset_format(tmp_path) == "mesh_folder"
    ds = load_mesh_folder(tmp_path, num_points=32, cache_dir=str(tmp_path / "cache"))
    assert sorted(ds["train"]["path"]) == ["a/train/m.glb", "b/train/o.gltf"]
    assert sorted(ds["test"]["path"]) == ["a/test/n.glb", "b/test/p.glb"]
