"""``famwidget demo | export | bench``: the command line.

``famwidget demo`` explains a gallery with a shipped model and writes a standalone page that works
offline; ``famwidget bench`` runs the benchmark harness (``famwidget.bench``).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Sequence


def demo(out: pathlib.Path, method: str, n: int) -> pathlib.Path:
    """Explain the demo gallery with ``method`` and write ``out/famwidget-demo.html``."""
    from .demo import demo_gallery
    from .widget import Explorer

    start = time.perf_counter()
    gallery = demo_gallery(n)
    print(f"model: {gallery.description}")
    explorer = Explorer(
        gallery.model,
        gallery.images,
        labels=gallery.labels,
        method=method,
        display=gallery.display,
    )
    explorer.select(0)
    path = explorer.to_html(out / "famwidget-demo.html", methods=[method], note=gallery.description)
    explorer.close()
    seconds = time.perf_counter() - start
    print(f"explained {len(gallery.labels)} images with {method} in {seconds:.1f} s")
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
    p_export = commands.add_parser(
        "export", help="an executed notebook as HTML whose widgets work offline"
    )
    p_export.add_argument("notebook", type=pathlib.Path)
    p_export.add_argument("-o", "--out", type=pathlib.Path, default=None)
    p_bench = commands.add_parser("bench", help="run the benchmarks (see famwidget.bench)")
    p_bench.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out, args.method, args.n)
    elif args.command == "export":
        from .widget.export import export_notebook

        print(f"wrote {export_notebook(args.notebook, args.out)}")
    elif args.command == "bench":
        from .bench.__main__ import main as bench_main

        return bench_main(args.rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
