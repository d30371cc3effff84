"""``famwidget demo | export | evaluate | bench``: the command line.

``famwidget demo`` explains a gallery with a shipped model and writes a standalone page that works
offline; ``famwidget evaluate`` scores the methods against ground truth (``famwidget.evaluate``);
``famwidget bench`` runs the benchmark harness (``famwidget.bench``).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Sequence


def demo(out: pathlib.Path, method: str, n: int, photos: bool = False) -> pathlib.Path:
    """Explain the demo gallery with ``method`` and write ``out/famwidget-demo.html``.

    The default is the re-identification case the FAM paper is about: the shipped ``reid_net``,
    a query of an unseen identity and a gallery ranked by similarity, every result explained.
    ``photos=True`` explains real photos with an untrained ResNet-18 instead.
    """
    from .api import methods
    from .widget import Explorer, ReIDExplorer

    start = time.perf_counter()
    if photos:
        from .demo import demo_gallery

        g = demo_gallery(n)
        widget = Explorer(g.model, g.images, labels=g.labels, method=method, display=g.display)
        description = g.description
    else:
        from .demo import reid_demo

        r = reid_demo(n)
        widget = ReIDExplorer(
            r.model,
            r.query,
            r.gallery,
            query_id=r.query_id,
            gallery_ids=r.ids,
            display=r.display,
            query_display=r.query_display,
            method=method,
        )
        description = r.description
    print(f"model: {description}")
    exported = [m for m in (method, "score-fam") if m in methods()]
    widget.select(0)
    path = widget.to_html(out / "famwidget-demo.html", methods=exported, note=description)
    widget.close()
    seconds = time.perf_counter() - start
    print(f"explained {widget.gallery['n']} images with {', '.join(exported)} in {seconds:.1f} s")
    print(f"wrote {path.resolve()}  (open it in a browser: it needs no kernel and no network)")
    print("notebooks: .venv/bin/jupyter lab notebooks/   (start with quickstart.ipynb)")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="famwidget", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_demo = commands.add_parser("demo", help="explain the demo gallery, write a standalone page")
    p_demo.add_argument("--out", type=pathlib.Path, default=pathlib.Path("demo-output"))
    p_demo.add_argument("--method", default="grad-fam")
    p_demo.add_argument("-n", type=int, default=12, help="gallery size")
    p_demo.add_argument("--photos", action="store_true", help="real photos, untrained ResNet-18")
    p_export = commands.add_parser(
        "export", help="an executed notebook as HTML whose widgets work offline"
    )
    p_export.add_argument("notebook", type=pathlib.Path)
    p_export.add_argument("-o", "--out", type=pathlib.Path, default=None)
    commands.add_parser(
        "evaluate", help="score the methods against ground truth: famwidget evaluate --help"
    )
    commands.add_parser("bench", help="run the benchmarks: famwidget bench --help")
    commands.add_parser(
        "explain", help="explain a whole dataset into a Zarr store: famwidget explain --help"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate"]:  # the evaluation parses its own options, also under torchrun
        from .dataset.sharded import evaluate_main

        return evaluate_main(argv[1:])
    if argv[:1] == ["explain"]:  # whole datasets, also under torchrun
        from .dataset.cli import main as explain_main

        return explain_main(argv[1:])
    if argv[:1] == ["bench"]:  # the benchmarks parse their own options
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out, args.method, args.n, args.photos)
    elif args.command == "export":
        from .widget.export import export_notebook

        print(f"wrote {export_notebook(args.notebook, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
