"""``python -m asgi_metrics.slo``: the ``http-metrics`` command."""

from __future__ import annotations

import sys

from asgi_metrics.slo.cli import main

sys.exit(main())
