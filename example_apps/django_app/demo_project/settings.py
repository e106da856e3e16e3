"""Settings of the example Django project (no database needed)."""

from __future__ import annotations

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "demo_project.urls"
INSTALLED_APPS: list[str] = ["shop"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
WSGI_APPLICATION = "demo_project.wsgi.application"

MIDDLEWARE = [
    # The one line: first, so it sees the final response of every request.
    "wsgi_metrics.django.MetricsMiddleware",
    "django.middleware.common.CommonMiddleware",
]

# Same keys as the WSGI/ASGI middleware's keyword options.
HTTP_METRICS = {"exclude_paths": ["/healthz"]}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR"}},
}
