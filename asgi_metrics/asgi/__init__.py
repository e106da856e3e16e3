"""The pure ASGI adapter: the middleware, its per-request observer, the ``/metrics``
endpoint as an ASGI app, and correlation IDs on ASGI messages."""
