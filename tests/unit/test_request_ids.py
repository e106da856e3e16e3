"""New correlation IDs: ``uuid4().hex`` form, unique across threads and forked workers."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from asgi_metrics.correlation.request_ids import new_id


def test_form_of_many_batches() -> None:
    ids = [new_id() for _ in range(1000)]  # several refills of the pool
    assert len(set(ids)) == len(ids)
    for cid in ids:
        parsed = uuid.UUID(cid)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == cid


def test_unique_across_threads() -> None:
    seen: list[list[str]] = []

    def draw() -> None:
        seen.append([new_id() for _ in range(2000)])

    threads = [threading.Thread(target=draw) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [cid for ids in seen for cid in ids]
    assert len(every) == 16000 and len(set(every)) == 16000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_never_repeat_the_parent_or_each_other() -> None:
    """The parent's pool holds IDs when it forks (as a gunicorn arbiter might): children
    must not hand them out, nor draw the same new ones."""
    new_id()  # the pool now holds the rest of a batch
    children: list[tuple[int, int]] = []
    for _ in range(3):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: write 300 IDs and leave at once
            os.close(read_end)
            os.write(write_end, " ".join(new_id() for _ in range(300)).encode())
            os._exit(0)
        os.close(write_end)
        children.append((pid, read_end))
    from_children = []
    for pid, read_end in children:
        with os.fdopen(read_end, "rb") as pipe:
            from_children.append(pipe.read().decode().split())
        os.waitpid(pid, 0)
    from_parent = [new_id() for _ in range(300)]
    every = from_parent + [cid for ids in from_children for cid in ids]
    assert all(len(ids) == 300 for ids in from_children)
    assert len(set(every)) == len(every) == 1200
