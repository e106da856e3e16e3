"""The multiprocess store with native histograms: each histogram also written, in native
form, into this process' native file (:mod:`asgi_metrics.multiprocess.native_files`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from asgi_metrics.core import native
from asgi_metrics.core.labels import Key
from asgi_metrics.core.naming import MetricNames
from asgi_metrics.multiprocess.native_files import NativeFile
from asgi_metrics.multiprocess.store import MultiprocessStore


class NativeMultiprocessStore(MultiprocessStore):
    """:class:`~asgi_metrics.multiprocess.store.MultiprocessStore` that also writes the
    native form of every histogram into this process' native file."""

    def __init__(
        self,
        names: MetricNames,
        const_labels: Mapping[str, str],
        buckets: tuple[float, ...],
        size_buckets: tuple[float, ...],
        max_label_sets: int = 2000,
        on_overflow: Callable[[str], None] | None = None,
        directory: str | None = None,
        *,
        bucket_factor: float = 1.1,
        max_buckets: int = 160,
        zero_threshold: float = native.DEFAULT_ZERO_THRESHOLD,
    ) -> None:
        super().__init__(names, const_labels, buckets, size_buckets, max_label_sets,
                         on_overflow, directory)
        assert self.directory is not None  # MultiprocessStore found it or raised
        self.native_file = NativeFile(
            self.directory, native.pick_schema(bucket_factor), max_buckets, zero_threshold,
            const_labels,
        )

    @staticmethod
    def _observe(store: MultiprocessStore, hist: Any, key: Key, value: float) -> None:
        # Classic first, native second: see the module docstring.
        MultiprocessStore._observe(store, hist, key, value)
        if key not in hist.series:  # past the label-set cap: the overflow series
            key = store.admit(hist.table, key)
        store.native_file.observe(  # type: ignore[attr-defined]
            hist.family.name, hist.table, key, value, hist.family.labels
        )
