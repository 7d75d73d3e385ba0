"""The web page as a Hugging Face Space runs it (`sdk: gradio`, `app_file: app.py`), or locally: `python app.py`.

Model: $CLIP2POINT_MODEL (a folder or Hub id); unset, the project's published weights, or a small untrained
model (labelled on the page) when the Hub cannot be reached. $CLIP2POINT_INDEX: a shape index from
`clip2point embed`, which adds a search tab. `clip2point serve` starts the same page with flags.
"""

import os
import sys
from pathlib import Path

try:
    import clip2point_hf  # noqa: F401
except ImportError:  # a Space runs this file in a checkout of the repository, without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from clip2point_apps.web import build_demo

demo = build_demo(
    model=os.environ.get("CLIP2POINT_MODEL") or None, index=os.environ.get("CLIP2POINT_INDEX") or None
)

if __name__ == "__main__":
    demo.launch()
