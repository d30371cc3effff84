"""``python -m famwidget`` is the ``famwidget`` command."""

import sys

from .cli import main

sys.exit(main())
