"""Sphinx configuration."""

from datetime import datetime
from importlib.metadata import metadata

info = metadata("scden")
project = "den"
author = "den developers"
copyright = f"{datetime.now():%Y}, {author}"
version = release = info["Version"]

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx_autodoc_typehints",
    "sphinxcontrib.bibtex",
]
autosummary_generate = True
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
bibtex_bibfiles = ["references.bib"]
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
# .rst first: autosummary writes its generated API stubs with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
    "torch": ("https://pytorch.org/docs/stable/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "sklearn": ("https://scikit-learn.org/stable/", None),
}
html_theme = "sphinx_book_theme"
html_title = "den"


def _readme_links(app, relative_path, parent_docname, content):
    """README's links to the tutorials and the changelog as the docs hold them (index.md includes README)."""
    if relative_path.name == "README.md":
        content[0] = (
            content[0]
            .replace("[tutorials/pbmc.ipynb](tutorials/pbmc.ipynb)", "{doc}`tutorials/pbmc.ipynb </tutorials/pbmc>`")
            .replace(
                "[tutorials/batches.ipynb](tutorials/batches.ipynb)",
                "{doc}`tutorials/batches.ipynb </tutorials/batches>`",
            )
            .replace("](CHANGELOG.md)", "](project:/changelog.md)")
        )


def setup(app):
    """Sphinx extension hook: rewrite the included README's links."""
    app.connect("include-read", _readme_links)
