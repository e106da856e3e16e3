"""Multiprocess mode: several worker processes (gunicorn, ``uvicorn --workers``) writing
to prometheus_client's files in ``PROMETHEUS_MULTIPROC_DIR``, a scrape of any of them
showing the sum over all.

Public: :func:`child_exit` (a gunicorn hook), :func:`clean_multiproc_dir` (for server
start-up), :class:`DirectoryCollector` (the directory as a collector, safe alongside our
compaction) and :func:`multiproc_dir`. A scrape in this mode shows the process metrics of
every worker and of the server's master (:mod:`asgi_metrics.multiprocess.process_metrics`).
For native histograms: :func:`collect_directory_with_native`, :func:`read_native` and
:func:`native_tables` and :func:`native_lookup`.
"""

from asgi_metrics.multiprocess.directory import (
    ENV_VAR,
    DirectoryCollector,
    child_exit,
    clean_multiproc_dir,
    collect_directory,
    collect_directory_with_native,
    multiproc_dir,
)
from asgi_metrics.multiprocess.native_files import native_lookup, native_tables, read_native

__all__ = [
    "ENV_VAR",
    "DirectoryCollector",
    "child_exit",
    "clean_multiproc_dir",
    "collect_directory",
    "collect_directory_with_native",
    "multiproc_dir",
    "native_lookup",
    "native_tables",
    "read_native",
]
