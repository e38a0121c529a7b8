"""Sphinx configuration of the Albor spec book.

The pages under generated/ are written by ``albor book`` before Sphinx runs; MathJax
is served from the book itself (sphinx-mathjax-offline), so the book reads without a network.
"""

project = "Albor"
author = "the Albor authors"
copyright = "Albor authors, Apache-2.0"

extensions = ["myst_parser", "sphinx.ext.mathjax", "sphinx-mathjax-offline", "albor.verify.book.sphinx_ext"]
myst_enable_extensions = ["dollarmath", "amsmath", "attrs_inline", "colon_fence"]
myst_heading_anchors = 3

root_doc = "index"
exclude_patterns = ["_build", "generated/snippets", "Thumbs.db", ".DS_Store"]
math_numfig = False

html_theme = "alabaster"
html_title = "Albor spec book"
html_static_path = ["_static"]
html_css_files = ["albor.css"]
html_show_sourcelink = False
html_theme_options = {
    "page_width": "auto",
    "sidebar_width": "230px",
    "fixed_sidebar": True,
    "show_relbars": False,
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
