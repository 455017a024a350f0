"""Alert rules, their current state per server and label set, and every state change.

A rule is a condition on one metric aggregated over a window (``avg(cpu.percent) over 5 min >= 95``) that must
hold for ``for_s`` seconds before it fires, over a scope of the team's servers. The worker evaluates each rule
every ``HOSTATLAS_ALERT_INTERVAL`` seconds (``evaluate.py``); ``next_evaluation_at`` is its lease.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime

# A canonical label string (``k=v,k=v``) as the telemetry stores key series by; bounded so the unique index
# below stays within PostgreSQL's B-tree entry size.
LABELS_MAX = 1024


class Operator(StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="


class NoData(StrEnum):
    OK = "ok"  # no data is fine: a firing alert resolves
    ALERT = "alert"  # no data counts as the condition holding
    KEEP = "keep"  # no data changes nothing


class Scope(StrEnum):
    ALL = "all"  # every server of the team, present and future
    SERVERS = "servers"  # the servers listed in server_ids
    TAGS = "tags"  # the servers carrying any of tags


class AlertStatus(StrEnum):
    OK = "ok"
    PENDING = "pending"  # the condition holds, not for long enough yet
    FIRING = "firing"


class AlertRule(Base):
    __tablename__ = "alert_rules"
    __table_args__ = (
        # The worker's only query: which enabled rules are due (a disabled rule has NULL here).
        Index("ix_alert_rules_next_evaluation_at", "next_evaluation_at"),
        Index("ix_alert_rules_team_id", "team_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(1000), default="")
    metric: Mapped[str] = mapped_column(String(128))
    label_filters: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    aggregation: Mapped[str] = mapped_column(String(8))
    window_s: Mapped[int] = mapped_column(Integer)
    operator: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float)
    for_s: Mapped[int] = mapped_column(Integer, default=0)
    recovery_threshold: Mapped[float | None] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16), default=Scope.ALL.value)
    server_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    no_data: Mapped[str] = mapped_column(String(8), default=NoData.KEEP.value)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The lease: a worker evaluates the rule once this has passed, moving it one interval on by a conditional
    # UPDATE, so two workers never evaluate one rule for the same instant.
    next_evaluation_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Why the last evaluation failed (a store error, bad stored data); NULL once one succeeds.
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AlertState(Base):
    """A (rule, server, label set) that is not ``ok``: pending or firing. A series back to ``ok`` loses its row
    (its history stays in the transitions), so the table holds what is wrong now, not every series watched."""

    __tablename__ = "alert_states"
    __table_args__ = (UniqueConstraint("rule_id", "server_id", "labels", name="uq_alert_states_rule_server_labels"),
                      Index("ix_alert_states_team_id", "team_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    labels: Mapped[str] = mapped_column(String(LABELS_MAX), default="")
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UTCDateTime())  # when it entered ``state``
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_value: Mapped[float | None] = mapped_column(Float)
    last_evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The incident it fired into: its own, or its server's outage when the server was offline (suppressed).
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    # Fired while its server was offline: attached to the outage, no alert event; so its resolution sends none.
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)


class AlertTransition(Base):
    """Every state change of a (rule, server, label set), with the value and threshold that caused it."""

    __tablename__ = "alert_transitions"
    __table_args__ = (Index("ix_alert_transitions_rule_id", "rule_id", "id"),
                      Index("ix_alert_transitions_at", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    labels: Mapped[str] = mapped_column(String(LABELS_MAX), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(64))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
