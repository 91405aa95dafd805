"""The ``den`` console command: ``den demo`` runs the whole pipeline on bundled data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def demo(out: Path, *, n_epochs: int | None = None, random_state: int = 0, progress_bar: bool = True) -> list[Path]:
    """Embed, cluster and explain scanpy's bundled ``pbmc68k_reduced``; write results and figures to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    import den

    out.mkdir(parents=True, exist_ok=True)
    adata = sc.datasets.pbmc68k_reduced()
    print(f"pbmc68k_reduced: {adata.n_obs} cells x {adata.n_vars} genes")
    den.tl.embed(adata, n_epochs=n_epochs, random_state=random_state, progress_bar=progress_bar)
    den.tl.cluster(adata, random_state=random_state, progress_bar=progress_bar)
    k = adata.uns["den_clusters"]["n_clusters"]
    print(f"den found {k} clusters")
    den.tl.marker_features(adata, random_state=random_state, progress_bar=progress_bar)

    written: list[Path] = []

    def save(fig, name: str) -> None:
        path = out / name
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    save(
        den.pl.embedding(
            adata,
            color=["bulk_labels", "den_clusters", "den_clusters_confidence"],
            show=False,
            return_fig=True,
            wspace=0.45,
        ),
        "den_embedding.png",
    )
    save(den.pl.history(adata, show=False, return_fig=True), "den_history.png")
    save(den.pl.spectrum(adata, show=False, return_fig=True), "den_spectrum.png")
    save(den.pl.marker_features(adata, n_genes=4, show=False, return_fig=True), "den_marker_features.png")
    dot = den.pl.marker_features(adata, kind="dotplot", n_genes=3, dendrogram=False, show=False, return_fig=True)
    save(dot.make_figure() or dot.fig, "den_marker_dotplot.png")
    largest = adata.obs["den_clusters"].value_counts().index[0]
    save(den.pl.shap_summary(adata, largest, show=False, return_fig=True), f"den_shap_summary_{largest}.png")
    table = sc.get.rank_genes_groups_df(adata, None, key="den_marker_features")
    csv = out / "den_marker_features.csv"
    table.to_csv(csv, index=False)
    written.append(csv)
    h5ad = out / "pbmc68k_reduced_den.h5ad"
    adata.write_h5ad(h5ad)
    written.append(h5ad)
    print("\nTop 5 SHAP marker genes per den cluster:")
    for g in adata.uns["den_marker_features"]["names"].dtype.names:
        top = list(adata.uns["den_marker_features"]["names"][g][:5])
        major = adata.obs.loc[adata.obs["den_clusters"] == g, "bulk_labels"].value_counts().index[0]
        print(f"  {g:>3} ({major}): {', '.join(top)}")
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``den`` command."""
    parser = argparse.ArgumentParser(prog="den", description="Differentiating Embedding Networks for single-cell data.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run embed -> cluster -> marker_features on scanpy's pbmc68k_reduced")
    p.add_argument("--out", type=Path, default=Path("den-demo"), help="output folder (default: ./den-demo)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of the embedding (default: automatic)")
    p.add_argument("--seed", type=int, default=0, help="random_state of every step")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    written = demo(args.out, n_epochs=args.epochs, random_state=args.seed, progress_bar=not args.no_progress)
    print(f"\nWrote {len(written)} files to {args.out.resolve()}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
