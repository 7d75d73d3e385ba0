"""The applications built on the ``clip2point_hf`` library: training, evaluation, Hub export, shape search, the
``clip2point`` command and the web page.

The library never imports this package (an import-linter contract, checked in CI), as open_clip never imports
open_clip_train: a user who only runs a model gets none of it. Importing this package imports nothing heavy, so
``clip2point --help`` answers before torch or transformers load.
"""
