"""New correlation IDs: ``uuid.uuid4().hex`` form, made cheaply.

``uuid4().hex`` costs ~2.6 us (``os.urandom`` plus a ``UUID`` object). These IDs have the
same form (32 lower-case hex digits, RFC 4122 version 4) and cost ~0.09 us: a private
Mersenne Twister draws 128 IDs' worth of bits at once, the version and variant bits are set
on all of them with one mask, and one ``hex``/``split`` in C cuts them apart; each request
then pops one. Correlation IDs identify requests, they are not secrets.

The generator is private and seeded from the OS, so IDs stay unique even when the
application seeds the global ``random``. A forked child reseeds it and drops the IDs it
inherited, so pre-fork workers (gunicorn) never hand out their parent's or each other's.
"""

from __future__ import annotations

import os
import random

_BATCH = 128
_ID_BITS = 128
_VERSION_VARIANT_MASK = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << _ID_BITS) - 1)
_VERSION_4_VARIANT_RFC = (0x4000 << 64) | (0x8000 << 48)
# The same two masks repeated for every ID of a batch.
_BATCH_MASK = sum(_VERSION_VARIANT_MASK << (_ID_BITS * i) for i in range(_BATCH))
_BATCH_SET = sum(_VERSION_4_VARIANT_RFC << (_ID_BITS * i) for i in range(_BATCH))

_generator = random.Random(os.urandom(32))
_getrandbits = _generator.getrandbits
# list.extend and list.pop are atomic: threads share the pool without a lock. Two threads
# finding it empty at once both refill it, which only draws more IDs.
_pool: list[str] = []

#: Pops a new ID; raises ``IndexError`` when the pool is empty (then :func:`new_id` refills
#: it). For the per-request paths: a builtin call, no Python frame.
take_id = _pool.pop


def new_id() -> str:
    """A new ID in ``uuid.uuid4().hex`` form: 32 lower-case hex digits, version 4."""
    try:
        return take_id()
    except IndexError:
        bits = (_getrandbits(_ID_BITS * _BATCH) & _BATCH_MASK) | _BATCH_SET
        ids = bits.to_bytes(_BATCH * 16, "big").hex(" ", 16).split()
        # This thread keeps one of the new batch for itself: other threads emptying the
        # pool again meanwhile cannot leave it without an ID.
        mine = ids.pop()
        _pool.extend(ids)
        return mine


def _after_fork_in_child() -> None:
    _pool.clear()
    _generator.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
