"""Sphinx configuration of skmeta's documentation."""

import skmeta

project = "skmeta"
author = "the skmeta developers"
release = version = skmeta.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "inherited-members": "Module, Sequence, Dataset",
    "exclude-members": ", ".join([
        "get_metadata_routing", "set_output", *(
            f"set_{method}_request" for method in (
                "fit", "score", "predict", "predict_proba", "transform",
                "partial_fit", "inverse_transform"))]),
}
# Docstrings inherited from scikit-learn (score, set_params, ...) cite labels
# of scikit-learn's own site, which this build cannot resolve.
suppress_warnings = ["ref.ref", "ref.term"]
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
nitpicky = False
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"demo\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
}

intersphinx_mapping = {}  # offline builds: no inventories are fetched
html_theme = "alabaster"
html_theme_options = {"description": "Meta-learning as scikit-learn estimators"}
