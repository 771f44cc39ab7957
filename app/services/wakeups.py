"""Wake-ups after commit: the one way to tell a worker about a row that the same transaction writes.

The rule for transactions: services change rows and flush; the boundary (a request, a worker
task's `session_scope`, the CLI) commits. A wake-up message sent before that commit could reach a
worker that does not see the row yet, and one sent from a transaction that then rolls back would
wake it for nothing. So a service never sends: it registers the send here, and the send runs
once the session's transaction has committed, or never if it rolls back or closes without commit.

The send receives a fresh session of its own, committed after it returns, for what it records
(that the message went out, or why it could not). A send that raises is logged and swallowed: the
row is committed either way, and the reconciler or the person asking again recovers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger("tailor.wakeups")

_PENDING = "tailor.wakeups.pending"

Send = Callable[[Session], object]


def wake_after_commit(db: Session, send: Send) -> None:
    """Call `send(session)` once `db`'s current transaction commits; drop it if it does not."""
    pending: list[Send] | None = db.info.get(_PENDING)
    if pending is None:
        pending = db.info[_PENDING] = []
        event.listen(db, "after_commit", _send_pending)
        event.listen(db, "after_transaction_end", _drop_unsent)
    pending.append(send)


def pending_wakeups(db: Session) -> int:
    """How many sends wait for this session's commit."""
    return len(db.info.get(_PENDING) or ())


def _send_pending(db: Session) -> None:
    if db.in_nested_transaction():  # a savepoint was released: the outer transaction is still open
        return
    sends = list(db.info.get(_PENDING) or ())
    db.info[_PENDING].clear()
    if not sends:
        return
    bind = db.get_bind()  # the committed session cannot run SQL any more: each send gets its own
    for send in sends:
        with Session(bind=bind, expire_on_commit=False) as session:
            try:
                send(session)
                session.commit()
            except Exception:  # noqa: BLE001 - the row is committed; a lost wake-up is recovered later
                session.rollback()
                log.warning("a wake-up could not be sent after commit", exc_info=True)


def _drop_unsent(db: Session, transaction: SessionTransaction) -> None:
    """The outermost transaction ended without a commit (rollback, close): its sends are void."""
    if transaction.parent is None and db.info.get(_PENDING):
        log.debug("dropping %d wake-up(s) of a transaction that did not commit", len(db.info[_PENDING]))
        db.info[_PENDING].clear()
