"""The keys an app or a framework integration uses to talk to the middleware through the
request itself (the ASGI scope, the WSGI environ)."""

#: An ASGI app (or framework integration) that turns an exception into its own 500 puts
#: the exception in the scope under this key to have it counted in the exceptions counter.
ASGI_EXCEPTION_KEY = "asgi_metrics.exception"
#: The same for WSGI, in the environ.
WSGI_EXCEPTION_KEY = "wsgi_metrics.exception"
