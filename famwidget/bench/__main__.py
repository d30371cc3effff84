"""``python -m famwidget.bench``: see :mod:`famwidget.bench`."""

from . import main

raise SystemExit(main())
