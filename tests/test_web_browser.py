"""The web page in a real headless browser: `clip2point serve` on a free local port, Chromium (Debian's
package, driven by its chromedriver through selenium) uploads a file, clicks Classify, and reads the scores
and the views picture back from the page; a screenshot is saved (in $CLIP2POINT_SCREENSHOT_DIR, else the
test's temporary folder). Skipped where chromium, chromedriver, selenium or gradio are missing;
`make test-web` installs the Python side and runs it."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip2point_hf  # noqa: F401  (registers the task)
from clip2point_apps.visualization import save_views_image
from clip2point_apps.weights import UNTRAINED_LABEL, Weights, build_classifier
from clip2point_hf.point_files import read_point_cloud
from clip2point_hf.samples import make_sample_point_cloud

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = [
    name
    for name, present in (
        ("chromium", CHROMIUM),
        ("chromedriver", CHROMEDRIVER),
        ("selenium", importlib.util.find_spec("selenium")),
        ("gradio", importlib.util.find_spec("gradio")),
    )
    if not present
]
pytestmark = [
    pytest.mark.web,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (see `make test-web`)"),
]
LABELS = ["chair", "table", "cup", "lamp", "bowl"]
STARTUP_S = 240  # loading torch, transformers and gradio on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_binary_ply(path: Path, points: np.ndarray) -> Path:
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    path.write_bytes(header.encode() + np.ascontiguousarray(points, "<f4").tobytes())
    return path


@contextlib.contextmanager
def serving(work: Path, *options: str):
    """The URL of `clip2point serve [options]` on a free local port while nothing can be reached (the labelled
    untrained fallback model), stopped on exit."""
    port = free_port()
    log = open(work / "serve.log", "w")  # noqa: SIM115  (closed below)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(work / "empty-hub-cache"),
        "CLIP2POINT_MODEL": str(work / "no-converted-model"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    command = [sys.executable, "-m", "clip2point_apps.cli", "serve", "--port", str(port), *options]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the server did not start: {(work / 'serve.log').read_text()[-2000:]}")
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, classifier): the page of a bare `clip2point serve`; the classifier is the same (seeded) untrained
    model, for the expected scores."""
    model = build_classifier(Weights("untrained", "", None, UNTRAINED_LABEL))
    with serving(tmp_path_factory.mktemp("web-browser")) as url:
        yield url, model


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1400,2200",
        "--enable-unsafe-swiftshader",  # WebGL for the 3D viewer without a GPU
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_classify_and_read_back_the_page(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, model = served
    upload = write_binary_ply(tmp_path / "chair.ply", make_sample_point_cloud("chair", 3000, seed=7))
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
    assert "weights: a small UNTRAINED random model" in browser.find_element(By.ID, "weights").text

    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(upload))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '#upload [aria-label="chair.ply"]')))
    labels = browser.find_element(By.CSS_SELECTOR, "#labels textarea, #labels input")
    labels.clear()
    labels.send_keys(", ".join(LABELS))
    browser.find_element(By.ID, "classify").click()

    # The scores, as the page prints them (rank | label | score), once the table has every label.
    def table_rows(driver):
        rows = driver.find_elements(By.CSS_SELECTOR, "#scores table tbody tr")
        return rows if len(rows) == len(LABELS) else False

    rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in wait.until(table_rows)]
    expected = model(str(upload), candidate_labels=LABELS)
    assert [row[1] for row in rows] == [e["label"] for e in expected]
    np.testing.assert_allclose([float(row[2]) for row in rows], [e["score"] for e in expected], atol=6e-5)

    # The views picture the page shows is the processor's picture of the uploaded cloud, pixel for pixel.
    source = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#views img").get_attribute("src"))
    shown = Image.open(io.BytesIO(urllib.request.urlopen(source, timeout=30).read()))
    reference = save_views_image(model.front_end, read_point_cloud(upload), tmp_path / "reference.png")
    assert shown.size == reference.size
    assert np.array_equal(np.asarray(shown.convert("L")), np.asarray(reference))

    # The bar chart and the 3D preview are drawn (a canvas each) before the screenshot.
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart canvas, #chart svg"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#preview canvas"))
    time.sleep(3)  # let the 3D viewer finish its first frames
    folder = Path(os.environ.get("CLIP2POINT_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(folder / "web_page.png"))


@pytest.fixture(scope="module")
def served_index(tmp_path_factory):
    """(url, index): `clip2point serve --index` over six sample shapes, embedded by a tiny model as
    examples/pretrain.py saves one (with the frozen image tower in image_encoder/), so photos can be searched."""
    from clip2point_apps.retrieval import IMAGE_ENCODER_DIR, PhotoEncoder, ShapeIndex
    from clip2point_hf import CLIP2PointFeatureExtractor, CLIP2PointForPreTraining, CLIP2PointProcessor
    from clip2point_hf.testing_utils import make_tiny_config, make_tiny_tokenizer

    work = tmp_path_factory.mktemp("web-search")
    torch.manual_seed(3)
    pretraining = CLIP2PointForPreTraining(make_tiny_config(num_views=6)).eval()
    model = work / "model"
    pretraining.clip2point.save_pretrained(model)
    CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(views="reference6", image_size=32, num_points=128), make_tiny_tokenizer()
    ).save_pretrained(model)
    PhotoEncoder.from_model(pretraining).save_pretrained(model / IMAGE_ENCODER_DIR)
    shapes = work / "shapes"
    shapes.mkdir()
    for name in ("chair", "table", "cup", "lamp", "bowl", "cone"):
        np.save(shapes / f"{name}.npy", make_sample_point_cloud(name, 2048, seed=0))
    index = ShapeIndex.build(shapes, model, work / "shapes.index", progress=False)
    with serving(work, "--index", str(work / "shapes.index")) as url:
        yield url, index


def test_search_by_photo_in_the_page(served_index, browser, tmp_path):
    """The search tab takes a photo, and its hits are the index's own photo search, in order."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, index = served_index
    yy, xx = np.mgrid[:48, :48]
    pixels = np.full((48, 48, 3), 255, np.uint8)
    pixels[(xx - 24) ** 2 + (yy - 24) ** 2 < 256] = (200, 30, 30)  # a red disk on white
    photo = tmp_path / "photo.png"
    Image.fromarray(pixels).save(photo)
    expected = [hit.name for hit in index.search_image(str(photo), k=8)]  # the tab's default k; 6 shapes

    browser.get(url)
    wait = WebDriverWait(browser, 120)
    tab = wait.until(
        lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Search"]
    )
    tab[0].click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#photo input[type=file]")))
    browser.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(photo))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo img"))
    browser.find_element(By.ID, "search").click()

    def hit_rows(driver):
        rows = driver.find_elements(By.CSS_SELECTOR, "#hit-table table tbody tr")
        return rows or False

    rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in wait.until(hit_rows)]
    shown = [row[1] for row in rows]
    assert shown == expected and len(shown) == 6, (shown, expected)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#hits img").get_attribute("src"))
    folder = Path(os.environ.get("CLIP2POINT_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(folder / "web_search_photo.png"))
