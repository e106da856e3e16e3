"""The framework-agnostic core: settings, label policy, the per-request rules, the store
and the recorder.

It imports no web framework, no ASGI or WSGI adapter and no exposition code (the contract
in ``pyproject.toml`` checks this). Adapters turn a request into plain values (method,
route template, status, timings) and hand them to :class:`~asgi_metrics.core.recorder.Recorder`.
"""
