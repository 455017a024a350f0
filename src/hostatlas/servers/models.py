from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime


class ServerStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Server(Base):
    __tablename__ = "servers"
    __table_args__ = (
        UniqueConstraint("team_id", "machine_id", name="uq_servers_team_machine"),
        Index("ix_servers_team_hostname", "team_id", "hostname"),
        # The offline sweep scans online servers by last check-in.
        Index("ix_servers_status_last_seen", "status", "last_seen_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    machine_id: Mapped[str] = mapped_column(String(128))
    hostname: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    os: Mapped[str | None] = mapped_column(String(255))
    kernel: Mapped[str | None] = mapped_column(String(255))
    cpu_cores: Mapped[int | None] = mapped_column(Integer)
    ram_total_mb: Mapped[int | None] = mapped_column(BigInteger)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ServerStatus.ONLINE.value)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    offline_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    uptime_s: Mapped[int | None] = mapped_column(BigInteger)
    boot_id: Mapped[str | None] = mapped_column(String(128))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ServerTag(Base):
    """One row per (server, tag), so ``?tag=`` filters with an index instead of scanning JSON."""

    __tablename__ = "server_tags"
    __table_args__ = (Index("ix_server_tags_team_tag", "team_id", "tag"),)

    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))


class AgentToken(Base):
    """Kept after its server is deleted (revoked, server_id NULL), so every process can learn of the
    revocation by polling ``revoked_at`` and evict the token from its cache."""

    __tablename__ = "agent_tokens"
    __table_args__ = (Index("ix_agent_tokens_revoked_at", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"), index=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    # SHA-256 of the raw agt_ token; the raw token is only ever in the register response.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
