"""What the multiprocess parity apps (:mod:`tests.support.apps.flask_parity`,
:mod:`tests.support.apps.fastapi_parity`) and their test agree on."""

from __future__ import annotations

#: The ``tenant`` label's allowed values; any other is recorded as ``__other__``.
TENANTS = ("acme", "globex", "initech")
#: ``max_label_values`` of the ``plan`` label (which has no allowed list).
PLAN_CAP = 4
