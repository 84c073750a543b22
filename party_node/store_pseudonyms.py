"""The store's pseudonym column at tens of millions of subjects: installing a new key (every subject's
pseudonym recomputed) and reading every pseudonym, both in blocks into numpy arrays.

Neither keeps a Python object per subject beyond one block (100,000 rows): a key install reads subjects
in row-id ranges, hashes a block and writes it back, with the pseudonym index dropped and rebuilt once
when the store is large (one sort instead of a random B-tree update per subject); :func:`all_pseudonyms`
fills an ``int64`` and an ``S16`` array (24 B a subject) in place. Both run inside one transaction or
snapshot, so a failed install leaves the old key's pseudonyms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from fedcore.errors import InvalidInput
from party_node.pseudonym import PSEUDONYM_BYTES, PseudonymKey

if TYPE_CHECKING:
    from party_node.store import Store

BLOCK = 100_000
REINDEX_MIN = 200_000  # subjects from which a key install drops and rebuilds the pseudonym index


def install_key(store: Store, key: PseudonymKey) -> int:
    """Recompute every subject's pseudonym under ``key`` unless it is installed already (returns how many)."""
    fp = key.fingerprint()
    s = store.t["subjects"]
    with store.write_transaction() as conn:
        if store._meta_get(conn, "pseudonym_key_fingerprint") == fp:
            return 0
        total = int(conn.execute(sa.select(sa.func.count()).select_from(s)).scalar() or 0)
        ix = next(i for i in s.indexes if i.name == "ix_subjects_pseudonym")
        reindex = total >= REINDEX_MIN
        if reindex:
            ix.drop(conn)
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        upd = f"UPDATE subjects SET pseudonym = {mark} WHERE row_id = {mark}"  # noqa: S608 (no input in it)
        done, last = 0, None
        while True:
            q = sa.select(s.c.row_id, s.c.id_kind, s.c.id_norm).order_by(s.c.row_id).limit(BLOCK)
            rows = conn.execute(q if last is None else q.where(s.c.row_id > last)).all()
            if not rows:
                break
            rids = [r[0] for r in rows]
            pseudo: list[Any] = [None] * len(rows)
            kinds = [r[1] for r in rows]
            for kind in set(kinds):
                at = [i for i, k in enumerate(kinds) if k == kind]
                for i, p in zip(at, key.pseudonymize([rows[i][2] for i in at], kind), strict=True):
                    pseudo[i] = p
            conn.exec_driver_sql(upd, list(zip(pseudo, rids, strict=True)))
            done += len(rows)
            last = rids[-1]
        if reindex:
            ix.create(conn)
        store._meta_set(conn, "pseudonym_key_fingerprint", fp)
        return done


def all_pseudonyms(store: Store, purpose: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(row_ids int64, pseudonyms S16)`` of every subject with a pseudonym (optionally only those
    consenting to ``purpose``), ordered by row id. An ``S16`` element read back as ``bytes`` loses trailing
    NUL bytes: index the array (``ps[idx]``) rather than turning elements into ``bytes``."""
    s = store.t["subjects"]
    stmt = sa.select(s.c.row_id, s.c.pseudonym).order_by(s.c.row_id)
    if purpose is not None:
        stmt = store._consent_filter(stmt, s.c.row_id, purpose)
    with store.engine.connect() as conn:
        bound = int(conn.execute(sa.select(sa.func.count()).select_from(s)).scalar() or 0)
        rids, ps = np.empty(bound, dtype=np.int64), np.empty(bound, dtype=f"S{PSEUDONYM_BYTES}")
        n = 0
        for block in conn.execution_options(yield_per=BLOCK).execute(stmt).partitions():
            rows = [r for r in block if r[1] is not None]
            m = len(rows)
            if n + m > len(rids):  # subjects added since the count (PostgreSQL, read committed)
                grow = m + n // 8
                rids = np.concatenate([rids[:n], np.empty(grow, dtype=np.int64)])
                ps = np.concatenate([ps[:n], np.empty(grow, dtype=ps.dtype)])
            raw = b"".join(r[1] for r in rows)
            if len(raw) != PSEUDONYM_BYTES * m:
                raise InvalidInput(f"a stored pseudonym is not {PSEUDONYM_BYTES} bytes")
            rids[n : n + m] = np.fromiter((r[0] for r in rows), dtype=np.int64, count=m)
            ps[n : n + m] = np.frombuffer(raw, dtype=ps.dtype)
            n += m
    if n < len(rids):
        rids, ps = rids[:n].copy(), ps[:n].copy()
    return rids, ps
