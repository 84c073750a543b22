"""Queue helper shared by both ends of the party link (coordinator/link.py, party_node/link.py)."""

from __future__ import annotations

import queue


def force_put(q: queue.Queue, item: object) -> None:  # type: ignore[type-arg]
    """Put ``item`` even if the queue is full, dropping what it holds: the link is gone, and the reader
    only needs to see the end marker or error."""
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            try:
                q.get_nowait()
            except queue.Empty:
                pass
