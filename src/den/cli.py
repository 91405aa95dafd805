"""The ``den`` console command: ``den demo`` runs the whole pipeline on bundled data.

Arguments are checked before any work; errors print one line (exit code 2 for usage, 1 for a
failure) and a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def demo(out: Path, *, n_epochs: int | None = None, random_state: int = 0, progress_bar: bool = True) -> list[Path]:
    """Embed, cluster and explain scanpy's bundled ``pbmc68k_reduced``; write results and figures to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    import den

    adata = sc.datasets.pbmc68k_reduced()
    print(f"pbmc68k_reduced: {adata.n_obs} cells x {adata.n_vars} genes")
    den.tl.embed(adata, n_epochs=n_epochs, random_state=random_state, progress_bar=progress_bar)
    den.tl.cluster(adata, random_state=random_state, progress_bar=progress_bar)
    print(f"den found {adata.uns['den_clusters']['n_clusters']} clusters")
    den.tl.marker_features(adata, random_state=random_state, progress_bar=progress_bar)
    written = _figures(adata, out)
    table = sc.get.rank_genes_groups_df(adata, None, key="den_marker_features")
    written.append(out / "den_marker_features.csv")
    table.to_csv(written[-1], index=False)
    written.append(out / "pbmc68k_reduced_den.h5ad")
    adata.write_h5ad(written[-1])
    print("\nTop 5 SHAP marker genes per den cluster:")
    for g in adata.uns["den_marker_features"]["names"].dtype.names:
        top = list(adata.uns["den_marker_features"]["names"][g][:5])
        major = adata.obs.loc[adata.obs["den_clusters"] == g, "bulk_labels"].value_counts().index[0]
        print(f"  {g:>3} ({major}): {', '.join(top)}")
    return written


def _figures(adata, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    import den

    written: list[Path] = []

    def save(fig, name: str) -> None:
        path = out / name
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    colours = ["bulk_labels", "den_clusters", "den_clusters_confidence"]
    save(den.pl.embedding(adata, color=colours, show=False, return_fig=True, wspace=0.45), "den_embedding.png")
    save(den.pl.history(adata, show=False, return_fig=True), "den_history.png")
    save(den.pl.spectrum(adata, show=False, return_fig=True), "den_spectrum.png")
    save(den.pl.marker_features(adata, n_genes=4, show=False, return_fig=True), "den_marker_features.png")
    dot = den.pl.marker_features(adata, kind="dotplot", n_genes=3, dendrogram=False, show=False, return_fig=True)
    save(dot.make_figure() or dot.fig, "den_marker_dotplot.png")
    largest = adata.obs["den_clusters"].value_counts().index[0]
    save(den.pl.shap_summary(adata, largest, show=False, return_fig=True), f"den_shap_summary_{largest}.png")
    return written


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"{text!r} is not an integer"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 1:
        msg = f"{value} must be at least 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"{text!r} is not an integer"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0 <= value < 2**32:
        msg = f"{value} must be in [0, 2**32 - 1]"
        raise argparse.ArgumentTypeError(msg)
    return value


def _out_dir(text: str) -> Path:
    if not text.strip():
        msg = "the output folder is empty; pass a folder name, e.g. --out den-demo"
        raise argparse.ArgumentTypeError(msg)
    return Path(text)


def prepare_out(out: Path) -> None:
    """Create ``out`` (or check it) and check it is writable, before any work is done."""
    if out.exists() and not out.is_dir():
        msg = f"--out {str(out)!r} is a file, not a folder; pass a folder name."
        raise SystemExit(_fail(msg))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(_fail(f"cannot create --out {str(out)!r}: {e.strerror}.")) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise SystemExit(_fail(f"--out {str(out)!r} is not writable; pass a folder you can write to."))


def _fail(message: str) -> int:
    print(f"den: error: {message}", file=sys.stderr)
    return 1


def _version() -> str:
    from den import __version__

    return __version__


def parser() -> argparse.ArgumentParser:
    """The ``den`` command's argument parser."""
    p = argparse.ArgumentParser(prog="den", description="Differentiating Embedding Networks for single-cell data.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run embed -> cluster -> marker_features on scanpy's pbmc68k_reduced")
    d.add_argument("--out", type=_out_dir, default=Path("den-demo"), help="output folder (default: ./den-demo)")
    d.add_argument(
        "--epochs", type=_positive_int, default=None, help="training epochs of the embedding (default: automatic)"
    )
    d.add_argument("--seed", type=_seed, default=0, help="random_state of every step")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    d.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``den`` command."""
    args = parser().parse_args(argv)  # usage errors: argparse prints one line and exits with 2
    prepare_out(args.out)
    try:
        written = demo(args.out, n_epochs=args.epochs, random_state=args.seed, progress_bar=not args.no_progress)
    except Exception as e:
        if args.debug:
            raise
        return _fail(f"{type(e).__name__}: {e} (run with --debug for the traceback)")
    print(f"\nWrote {len(written)} files to {args.out.resolve()}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
