from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime


class CertificateNotice(Base):
    """One expiry threshold one certificate (or domain) has crossed, for one ``not_after``.

    The unique key is the exactly-once: a worker that inserts the row sends the notice, one that finds it
    there (another worker, an earlier tick) sends nothing. A renewal moves ``not_after``, so the thresholds
    of the new certificate are new rows and fire again. The row of the incident threshold (7 days) also
    says whether that certificate's incident is still open (``resolved_at``).
    """

    __tablename__ = "certificate_notices"
    __table_args__ = (
        UniqueConstraint("team_id", "server_id", "kind", "name", "not_after", "threshold_days",
                         name="uq_certificate_notices_item"),
        # The open incidents the job checks for a renewal each pass.
        Index("ix_certificate_notices_open", "threshold_days", "resolved_at"),
        Index("ix_certificate_notices_server_id", "server_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # certificate (by path) or domain (by name)
    name: Mapped[str] = mapped_column(String(1024))
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    threshold_days: Mapped[int] = mapped_column(Integer)  # 30, 14, 7, 1, or 0 (expired)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
