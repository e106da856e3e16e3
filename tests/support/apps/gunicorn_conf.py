"""gunicorn settings for the multiprocess tests: the recipe from the README."""

from asgi_metrics.multiprocess import child_exit, clean_multiproc_dir

__all__ = ["child_exit", "on_starting"]


def on_starting(server: object) -> None:
    # Numbers from an earlier run must not be added to this one's.
    clean_multiproc_dir()
