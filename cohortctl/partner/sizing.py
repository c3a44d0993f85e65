"""Batches that stay under a destination's ``max_body_bytes`` (Segment refuses > 500 KB)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

Encoder = Callable[[Sequence[str]], bytes]
_PROBE = 10  # characters between the two probe ids


def fitted_batch_size(
    encode: Encoder, user_ids: Sequence[str], batch_size: int, max_body_bytes: int | None
) -> int:
    """The largest batch size (at most ``batch_size``) whose every body fits ``max_body_bytes``.

    Every item of a body differs only by its user id, so the body of ``n`` users is at most
    ``empty + n * item(longest id) + (n - 1)`` bytes; the item's size is measured with two
    probe ids, so item templates that hold the id more than once are sized right too.
    """
    if max_body_bytes is None or not user_ids:
        return batch_size
    longest = max(len(json.dumps(u, ensure_ascii=False).encode()) - 2 for u in user_ids)
    empty = len(encode(()))
    short = len(encode(("a",))) - empty
    per_char = (len(encode(("a" * (_PROBE + 1),))) - empty - short) / _PROBE
    item = short + per_char * (longest - 1)
    fits = int((max_body_bytes - empty + 1) // (item + 1))
    return max(1, min(batch_size, fits))
