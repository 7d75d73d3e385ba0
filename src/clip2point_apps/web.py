"""The web page (`clip2point serve`, the repository's `app.py`): drop a 3D file, see what the model sees.

The page shows a 3D preview of the object, the depth views the model renders from it, and the zero-shot
scores of the labels typed in; with a shape index it also searches (by text, by shape or by photo). Gradio is an optional extra
(`pip install clip2point-hf[demo]`) imported only inside :func:`build_demo`; everything the page computes
lives in :class:`PageBackend`, which needs no Gradio, so it is tested without a browser.

The choice of weights is shared with `examples/demo.py`: a folder or Hub id when given, else the project's
published weights, else (the Hub unreachable) a small random model that the page labels as untrained.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor
from clip2point_hf.pipeline_clip2point import ZeroShotPointCloudClassificationPipeline, parse_candidate_labels
from clip2point_hf.point_files import MESH_EXTENSIONS, POINT_FILE_TYPES, read_mesh, read_point_cloud
from clip2point_hf.points_clip2point import UP_AXES, convert_up_axis
from clip2point_hf.processing_clip2point import CLIP2PointProcessor
from clip2point_hf.rendering_clip2point import VIEW_PRESETS
from clip2point_hf.samples import SAMPLE_OBJECTS, make_sample_point_cloud

from .visualization import save_views_image
from .weights import build_classifier, resolve_weights

if TYPE_CHECKING:
    import gradio
    import pandas

DEFAULT_LABELS = "airplane, bottle, bowl, chair, cone, cup, lamp, table"
# The preview is for the eye: a few thousand points or a mesh of at most this many faces.
PREVIEW_POINTS = 2048
PREVIEW_MAX_FACES = 200_000
SAMPLE_POINTS = 4096


# --------------------------------------------------------------------------------------------------- backend


@dataclass
class PageResult:
    """Everything one click of "Classify" shows."""

    preview: str  # a .glb file for the 3D viewer
    views_image: str  # a .png grid of the depth views
    scores: list[dict]  # the pipeline's ranked [{"label", "score"}, ...]


class PageBackend:
    """The page's callbacks without the page: one loaded model, one pipeline per (up axis, views).

    Each pipeline shares the model and differs from the loaded one only in its processor's up axis and
    views, so its scores are the zero-shot pipeline's for a model folder saved with those settings.
    """

    def __init__(
        self, classifier: ZeroShotPointCloudClassificationPipeline, workdir: str | os.PathLike | None = None
    ):
        self.base = classifier
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="clip2point-web-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pipelines: dict[tuple[str, str], ZeroShotPointCloudClassificationPipeline] = {}
        self._count = 0

    def new_file(self, suffix: str) -> Path:
        """A fresh path in the work folder (Gradio serves files from the system's temp folder)."""
        self._count += 1
        return self.workdir / f"{self._count}-{suffix}"

    @property
    def view_choices(self) -> list[str]:
        """The view presets this model can score (all of them unless its config fixes per-view weights)."""
        weights = self.base.model.config.view_weights
        return [name for name, views in VIEW_PRESETS.items() if not weights or len(views) == len(weights)]

    @property
    def default_views(self) -> str:
        views = self.base.front_end.views
        return views if isinstance(views, str) and views in self.view_choices else self.view_choices[0]

    def pipeline_for(self, up_axis: str, views: str) -> ZeroShotPointCloudClassificationPipeline:
        key = (up_axis, views)
        if key not in self._pipelines:
            front_end = CLIP2PointFeatureExtractor.from_dict(
                {**self.base.front_end.to_dict(), "up_axis": up_axis, "views": views}
            )
            self._pipelines[key] = ZeroShotPointCloudClassificationPipeline(
                model=self.base.model,
                processor=CLIP2PointProcessor(front_end, self.base.processor.tokenizer),
                device=self.base.device,
            )
        return self._pipelines[key]

    def classify(
        self, file: str | None, sample: str | None, labels: str, up_axis: str, views: str
    ) -> PageResult:
        """Score `labels` for the uploaded `file` (or else the bundled `sample`); raises ValueError with one
        line for the user on bad input."""
        candidate_labels = parse_candidate_labels(labels)
        if up_axis not in UP_AXES:
            raise ValueError(f"up axis must be one of {list(UP_AXES)}, got {up_axis!r}")
        if views not in self.view_choices:
            raise ValueError(f"views must be one of {self.view_choices}, got {views!r}")
        if file:
            cloud = read_point_cloud(file)  # the pipeline's own reading of a path
            mesh = _preview_mesh(Path(file))
        elif sample:
            cloud = make_sample_point_cloud(sample, num_points=SAMPLE_POINTS, seed=0)
            mesh = None
        else:
            raise ValueError("upload a 3D file or pick a sample object")
        classifier = self.pipeline_for(up_axis, views)
        scores = classifier(cloud, candidate_labels=list(candidate_labels))
        picture, preview = self.new_file("views.png"), self.new_file("preview.glb")
        save_views_image(classifier.front_end, cloud, picture)
        write_preview_glb(preview, cloud, mesh, up_axis)
        return PageResult(str(preview), str(picture), scores)


def scores_frame(scores: list[dict]) -> pandas.DataFrame:
    import pandas

    return pandas.DataFrame({"label": [s["label"] for s in scores], "score": [s["score"] for s in scores]})


def scores_markdown(scores: list[dict]) -> str:
    rows = "\n".join(f"| {i} | {s['label']} | {s['score']:.4f} |" for i, s in enumerate(scores, 1))
    return f"| rank | label | score |\n|---:|---|---:|\n{rows}"


# --------------------------------------------------------------------------------------------------- preview


def _preview_mesh(path: Path):
    """The file's mesh when it is one of a size a browser shows at once, else None (show the points)."""
    if path.suffix.lower() not in MESH_EXTENSIONS:
        return None
    try:
        mesh = read_mesh(path)
    except ValueError:  # a .ply without faces is a point cloud
        return None
    return mesh if 0 < len(mesh.faces) <= PREVIEW_MAX_FACES else None


def write_preview_glb(path: str | os.PathLike, cloud: np.ndarray, mesh=None, up_axis: str = "y") -> None:
    """A binary glTF of the object, centred, in the unit sphere and turned y-up as the model sees it: the
    mesh with flat normals, or (for point data) up to PREVIEW_POINTS points as small tetrahedra coloured
    by height. glTF is y-up, so the viewer shows it upright."""
    source = mesh.vertices if mesh is not None else cloud
    source = torch.as_tensor(np.asarray(source, dtype=np.float64))
    centre = source.mean(dim=0)
    scale = float((source - centre).norm(dim=1).max()) or 1.0

    def place(points: np.ndarray) -> np.ndarray:
        moved = (torch.as_tensor(np.asarray(points, dtype=np.float64)) - centre) / scale
        return convert_up_axis(moved, up_axis).numpy().astype(np.float32)

    if mesh is not None:
        corners = place(mesh.vertices)[np.asarray(mesh.faces)]  # (F, 3, 3)
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        positions = corners.reshape(-1, 3)
        attributes = {"NORMAL": np.repeat(normals, 3, axis=0).astype(np.float32)}
        unlit = False
    else:
        rng = np.random.default_rng(0)
        points = np.asarray(cloud)
        if len(points) > PREVIEW_POINTS:
            points = points[rng.choice(len(points), PREVIEW_POINTS, replace=False)]
        centres = place(points)
        size = 0.015
        tetra = size * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float32)
        faces = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
        positions = (centres[:, None, None, :] + tetra[faces][None]).reshape(-1, 3)
        height = (centres[:, 1] + 1) / 2  # 0 at the bottom of the unit sphere, 1 at the top
        colour = np.stack([0.15 + 0.8 * height, 0.35 + 0.3 * height, 0.9 - 0.75 * height], axis=1)
        attributes = {"COLOR_0": np.repeat(colour.clip(0, 1), 12, axis=0).astype(np.float32)}
        unlit = True
    _write_glb(Path(path), positions.astype(np.float32), attributes, unlit)


def _write_glb(path: Path, positions: np.ndarray, attributes: dict[str, np.ndarray], unlit: bool) -> None:
    """Write one triangle list (non-indexed) as a GLB file (glTF 2.0 binary container)."""
    arrays = {"POSITION": positions, **attributes}
    blob, views, accessors = b"", [], []
    for index, (name, array) in enumerate(arrays.items()):
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data), "target": 34962})
        accessor = {"bufferView": index, "componentType": 5126, "count": len(array), "type": "VEC3"}
        if name == "POSITION":  # required by the spec for positions
            accessor.update(min=array.min(axis=0).tolist(), max=array.max(axis=0).tolist())
        accessors.append(accessor)
        blob += data  # float32 data keeps every view 4-byte aligned
    material: dict[str, Any] = {
        "pbrMetallicRoughness": {"baseColorFactor": [0.75, 0.78, 0.85, 1.0], "metallicFactor": 0.0},
        "doubleSided": True,
    }
    document: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "clip2point_apps.web"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {n: i for i, n in enumerate(arrays)}, "material": 0}]}],
        "materials": [material],
        "buffers": [{"byteLength": len(blob)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    if unlit:
        material["pbrMetallicRoughness"]["baseColorFactor"] = [1.0, 1.0, 1.0, 1.0]
        material["extensions"] = {"KHR_materials_unlit": {}}
        document["extensionsUsed"] = ["KHR_materials_unlit"]
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    blob += b"\0" * (-len(blob) % 4)
    chunks = [(text, b"JSON"), (blob, b"BIN\0")]
    total = 12 + sum(8 + len(data) for data, _ in chunks)
    with open(path, "wb") as out:
        out.write(b"glTF" + (2).to_bytes(4, "little") + total.to_bytes(4, "little"))
        for data, kind in chunks:
            out.write(len(data).to_bytes(4, "little") + kind + data)


# --------------------------------------------------------------------------------------------------- page


def build_demo(
    model: str | None = None,
    index: str | None = None,
    device: str | None = None,
    workdir: str | os.PathLike | None = None,
) -> gradio.Blocks:
    """The Gradio page. `model`: a folder or Hub id (None: the best weights that can be reached,
    `weights.resolve_weights`, down to the labelled untrained model). `index`: a shape index saved by `clip2point embed` (adds the
    search tab)."""
    import gradio as gr

    workdir = Path(workdir or tempfile.mkdtemp(prefix="clip2point-web-"))
    weights = resolve_weights(model)
    backend = PageBackend(build_classifier(weights, device=device), workdir=workdir)
    shapes = _retrieval().ShapeIndex.load(index) if index else None

    def on_classify(file, sample, labels, up_axis, views):
        try:
            result = backend.classify(file, sample, labels, up_axis, views)
        except ValueError as error:
            raise gr.Error(str(error).strip().splitlines()[0]) from None
        return result.preview, result.views_image, scores_frame(result.scores), scores_markdown(result.scores)

    notice = f"**{weights.describe()}**" if not weights.untrained else f"⚠️ **{weights.describe()}**"
    with gr.Blocks(title="CLIP2Point", analytics_enabled=False) as demo:
        gr.Markdown(
            "# CLIP2Point: zero-shot 3D classification\n"
            "Upload a mesh or point file, or pick a sample; type labels; the model renders depth views of the "
            f"object and scores each label.\n\n{notice}",
            elem_id="weights",
        )
        with gr.Tab("Classify"):
            with gr.Row():
                with gr.Column(scale=1):
                    file = gr.File(
                        label=f"3D file ({' '.join(POINT_FILE_TYPES)})",
                        file_types=list(POINT_FILE_TYPES),
                        type="filepath",
                        elem_id="upload",
                    )
                    sample = gr.Dropdown(
                        choices=list(SAMPLE_OBJECTS),
                        value="chair",
                        label="or a sample object (used when no file is uploaded; y-up)",
                        elem_id="sample",
                    )
                    labels = gr.Textbox(
                        value=DEFAULT_LABELS, label="candidate labels (comma-separated)", elem_id="labels"
                    )
                    with gr.Row():
                        up_axis = gr.Radio(
                            list(UP_AXES),
                            value=backend.base.front_end.up_axis,
                            label="up axis (z for ModelNet OFF; y for glTF, ShapeNet, ScanObjectNN)",
                        )
                        views = gr.Dropdown(backend.view_choices, value=backend.default_views, label="views")
                    button = gr.Button("Classify", variant="primary", elem_id="classify")
                with gr.Column(scale=1):
                    preview = gr.Model3D(
                        label="3D preview (as the model sees it: centred, y-up)",
                        clear_color=(0.97, 0.97, 0.97, 1.0),
                        height=320,
                        elem_id="preview",
                    )
            gr.Markdown(
                "**The depth views the model sees** (near is dark; each titled by where its camera stands)"
            )
            views_image = gr.Image(show_label=False, type="filepath", format="png", elem_id="views")
            with gr.Row():
                chart = gr.BarPlot(
                    x="label", y="score", sort="-y", y_lim=[0, 1], label="scores", elem_id="chart"
                )
                table = gr.Markdown(elem_id="scores")
            button.click(
                on_classify,
                inputs=[file, sample, labels, up_axis, views],
                outputs=[preview, views_image, chart, table],
            )
        if shapes is not None:
            _search_tab(gr, shapes, backend)
    return demo


def _retrieval():
    """`clip2point_apps.retrieval` (the index of `clip2point embed`); the page needs it only with an index."""
    try:
        from clip2point_apps import retrieval
    except ImportError as error:
        raise RuntimeError(f"a shape index needs clip2point_apps.retrieval, missing here ({error})") from None
    return retrieval


def search_index(
    shapes,
    text: str | None,
    like: str | None,
    k: int,
    picture: str | os.PathLike,
    photo: str | None = None,
) -> str:
    """Search `shapes` (a `ShapeIndex`) by a shape file `like`, else by a `photo`, else by `text`; write the hits'
    front views (after the photo, for a photo query) to `picture` and return them as a Markdown table. Raises
    ValueError (or OSError, for a model without an image tower) with one line for the user."""
    if like:
        hits = shapes.search_shape(like, k=int(k))
        query = f"shapes like {Path(like).name}"
    elif photo:
        hits = shapes.search_image(photo, k=int(k))
        query = f"shapes in the photo {Path(photo).name}"
    elif text and text.strip():
        hits = shapes.search_text(text.strip(), k=int(k))
        query = f"'{text.strip()}'"
    else:
        raise ValueError("type a description or upload a shape or a photo to search with")
    _retrieval().save_hits_image(
        hits, picture, up_axis=shapes.config.get("up_axis") or "y", title=query, query_image=photo or None
    )
    rows = "\n".join(f"| {i} | {hit.name} | {hit.score:.4f} |" for i, hit in enumerate(hits, 1))
    return f"| rank | shape | cosine |\n|---:|---|---:|\n{rows}"


def _search_tab(gr, shapes, backend: PageBackend) -> None:
    """Text-, shape- and photo-to-shape search over the index: the hits' front views, names and scores."""

    def on_search(text, like, photo, k):
        picture = backend.new_file("hits.png")
        try:
            table = search_index(shapes, text, like, k, picture, photo=photo)
        except (ValueError, OSError) as error:
            raise gr.Error(str(error).strip().splitlines()[0]) from None
        return str(picture), table

    with gr.Tab("Search"):
        gr.Markdown(f"Index: {len(shapes)} shapes, embedded with {shapes.config.get('model')}")
        with gr.Row():
            text = gr.Textbox(label="describe a shape", placeholder="a chair with armrests", elem_id="query")
            like = gr.File(
                label="or find shapes like this file", file_types=list(POINT_FILE_TYPES), elem_id="like"
            )
            photo = gr.Image(label="or shapes in this photo", type="filepath", elem_id="photo")
            k = gr.Slider(1, 32, value=8, step=1, label="results")
        go = gr.Button("Search", variant="primary", elem_id="search")
        with gr.Row():
            hits = gr.Image(show_label=False, type="filepath", format="png", elem_id="hits")
            table = gr.Markdown(elem_id="hit-table")
        go.click(on_search, inputs=[text, like, photo, k], outputs=[hits, table])


__all__ = [
    "PageBackend",
    "PageResult",
    "build_demo",
    "search_index",
    "write_preview_glb",
]
