"""Sphinx configuration of textvae's documentation: MyST Markdown pages, autodoc for the API, furo.

Build: ``.venv/bin/python -m sphinx -W -b html docs docs/_build/html`` (``-W``: a warning is an error;
``tests/test_docs.py`` runs exactly this)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # document this checkout's textvae

import textvae  # noqa: E402

project = "textvae"
author = "the textvae developers"
release = version = textvae.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 4  # [text](page.md#a-heading) links to headings down to ####
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "furo"
html_title = f"textvae {release}"
