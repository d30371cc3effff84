"""The trait contract: every synced trait of the widgets and its JSON kind, written once.

``python -m famwidget.widget.traits`` writes ``traits.json`` beside this file from the classes;
``tests/test_explorer.py`` checks the file against the classes and ``tests/js/traits.test.js``
checks ``js/traits.js`` against the file, so the Python classes, the page export and the
frontend cannot drift apart.
"""

from __future__ import annotations

import json
import pathlib

import traitlets as t

PATH = pathlib.Path(__file__).with_name("traits.json")

_KINDS = (
    (t.Bytes, "bytes"),
    (t.Dict, "object"),
    (t.List, "array"),
    (t.Bool, "boolean"),
    (t.Int, "number"),
    (t.Float, "number"),
    (t.Unicode, "string"),
    (t.Enum, "string"),
)


def kind(trait: t.TraitType) -> str:
    """The JSON kind of a trait's value as the frontend receives it."""
    for cls, name in _KINDS:
        if isinstance(trait, cls):
            return name
    raise TypeError(f"no JSON kind for trait type {type(trait).__name__}")


def contract() -> dict[str, str]:
    """``{trait name: kind}`` of every synced data trait of Explorer and ReIDExplorer."""
    from .explorer import Explorer
    from .reid import ReIDExplorer

    found: dict[str, str] = {}
    base = _widget_base()
    for cls in (Explorer, ReIDExplorer):
        for name, trait in cls.class_traits(sync=True).items():
            if name not in base and not name.startswith("_"):
                found[name] = kind(trait)
    return found


def _widget_base() -> set[str]:
    """The traits every anywidget has (layout, model names, ...): not part of the contract."""
    import anywidget

    return set(anywidget.AnyWidget.class_traits(sync=True))


def write(path: pathlib.Path = PATH) -> pathlib.Path:
    path.write_text(json.dumps(contract(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write())
