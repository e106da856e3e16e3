"""Route templates read from what a framework's router already decided, one module per
framework (ASGI frameworks; Flask's and Django's live with their adapters in
``wsgi_metrics``)."""
