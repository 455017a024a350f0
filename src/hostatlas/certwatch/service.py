"""SSL expiry rules: which discovered certificates and domains have crossed which expiry thresholds, the
``ssl.expiring`` notice of each crossing, and the certificate's incident. Domain code: no HTTP here.

What is watched: every discovered certificate with a ``not_after``, and every domain with an ``ssl_expiry``
that no discovered certificate on its server covers (the seed's web server reports both its certificate and
the domains it serves; one expiring certificate must make one notice, not one per name on it). A domain whose
web server serves another certificate than the one on disk (``Domain.reload_needed``, ``inventory.reload``) is
watched even so: its ``ssl_expiry`` is the served certificate's, which the renewed one on disk does not fix
until the server reloads. A domain's ``ssl_expiry`` is a day, taken at 00:00 UTC.

Each threshold a certificate crosses is a ``CertificateNotice`` row, inserted with ON CONFLICT DO NOTHING: the
worker whose insert made the row sends what it stands for, whoever finds it there sends nothing. So each
threshold fires once per certificate, two workers make one notice, and a renewal (a new ``not_after``) makes
the thresholds fire again. Several thresholds crossed at once (a certificate first seen 3 days from expiry)
make one ``ssl.expiring``, the tightest. The incident opens at 7 days (warning), gets a follow-up at 1 day
and becomes critical at expiry; a renewal past 7 days, or the certificate leaving discovery, resolves it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hostatlas.certwatch.models import CertificateNotice
from hostatlas.certwatch.schemas import SslExpiringData
from hostatlas.clock import isoformat_z
from hostatlas.events import service as events
from hostatlas.incidents import service as incidents
from hostatlas.incidents.models import SOURCE_KEY_MAX, TITLE_MAX, Severity, Source
from hostatlas.inventory.models import Certificate, Domain
from hostatlas.inventory.schemas import CertificateOut, DomainOut
from hostatlas.servers.models import Server
from hostatlas.servers.schemas import ServerRef

Kind = Literal["certificate", "domain"]
Threshold = Literal[30, 14, 7, 1]
# ssl.expiring fires when a certificate comes within this many days of its expiry, once per threshold.
THRESHOLDS: tuple[Threshold, ...] = (30, 14, 7, 1)
# The incident opens here (warning); at EXPIRED (not an ssl.expiring threshold) it becomes critical.
INCIDENT_AT = 7
EXPIRED = 0
STAGES = (*THRESHOLDS, EXPIRED)
HORIZON = timedelta(days=max(THRESHOLDS))
# Notices of an expiry this long past are dropped once their certificate has moved on (``forget_stale``).
STALE_AFTER = timedelta(days=60)
# Server ids per IN (...) list when reading notices.
CHUNK = 500



def domain_expiry(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def covers(names: Collection[str], domain: str) -> bool:
    """Whether a certificate for ``names`` serves ``domain`` (exactly, or through a one-label wildcard)."""
    parent = domain.split(".", 1)[1] if "." in domain else None
    return domain in names or (parent is not None and f"*.{parent}" in names)


def source_key(kind: str, server_id: int, name: str) -> str:
    """The incident's key: readable, unless the path is too long for the column."""
    key = f"{kind}:{server_id}:{name}"
    if len(key) <= SOURCE_KEY_MAX:
        return key
    return f"{kind}:{server_id}:sha256:{hashlib.sha256(name.encode()).hexdigest()}"


@dataclass(frozen=True)
class Watched:
    """A certificate (by path) or a domain (by name) on one server, with the expiry it had when read."""

    kind: Kind
    row_id: int
    team_id: int
    server_id: int
    name: str
    not_after: datetime

    @property
    def source_key(self) -> str:
        return source_key(self.kind, self.server_id, self.name)

    @property
    def identity(self) -> tuple[str, int, str, datetime]:
        return (self.kind, self.server_id, self.name, self.not_after)

    def due(self, now: datetime) -> tuple[int, ...]:
        """The stages crossed as of ``now``: every threshold within reach, and EXPIRED once past."""
        left = self.not_after - now
        return tuple(stage for stage in STAGES if left <= timedelta(days=stage))

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "row_id": self.row_id, "team_id": self.team_id, "server_id": self.server_id,
                "name": self.name, "not_after": self.not_after.isoformat()}

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> Watched:
        return cls(kind=fields["kind"], row_id=fields["row_id"], team_id=fields["team_id"],
                   server_id=fields["server_id"], name=fields["name"],
                   not_after=datetime.fromisoformat(fields["not_after"]))


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days until ``not_after``, rounded down: negative once expired."""
    return (not_after - now) // timedelta(days=1)


# --- what to look at ----------------------------------------------------------------------------------------


def _certificates_named(session: Session, server_ids: Collection[int]) -> dict[int, set[str]]:
    """The names the certificates of each server carry (their ``domains``)."""
    found: dict[int, set[str]] = {}
    for start in range(0, len(server_ids), CHUNK):
        chunk = sorted(server_ids)[start:start + CHUNK]
        for server_id, names in session.execute(select(Certificate.server_id, Certificate.domains)
                                                .where(Certificate.server_id.in_(chunk))):
            # A malformed stored list hides nothing: only its strings count.
            found.setdefault(server_id, set()).update(
                name for name in (names if isinstance(names, list) else []) if isinstance(name, str))
    return found


def expiring(session: Session, now: datetime) -> list[Watched]:
    """Every watched certificate and domain within ``HORIZON`` of its expiry (or past it)."""
    horizon = now + HORIZON
    found = [Watched("certificate", row_id, team_id, server_id, path, not_after)
             for row_id, team_id, server_id, path, not_after in session.execute(
                 select(Certificate.id, Certificate.team_id, Certificate.server_id, Certificate.path,
                        Certificate.not_after).where(Certificate.not_after <= horizon).order_by(Certificate.id))
             if not_after is not None]
    domains = session.execute(select(Domain.id, Domain.team_id, Domain.server_id, Domain.name, Domain.ssl_expiry,
                                     Domain.reload_needed)
                              .where(Domain.ssl_expiry <= horizon.date()).order_by(Domain.id)).all()
    named = _certificates_named(session, {row.server_id for row in domains})
    found += [Watched("domain", row_id, team_id, server_id, name, domain_expiry(expiry))
              for row_id, team_id, server_id, name, expiry, stale in domains
              if expiry is not None and (stale or not covers(named.get(server_id, set()), name))]
    return found


def pending(session: Session, items: list[Watched], now: datetime) -> list[Watched]:
    """The items with a stage due that has no notice yet: only they need a write transaction."""
    server_ids = sorted({item.server_id for item in items})
    noticed: set[tuple[str, int, str, datetime, int]] = set()
    columns = (CertificateNotice.kind, CertificateNotice.server_id, CertificateNotice.name,
               CertificateNotice.not_after, CertificateNotice.threshold_days)
    # Only the notices of the expiries at hand: a server's notices of certificates renewed long ago stay out.
    since = min((item.not_after for item in items), default=now)
    for start in range(0, len(server_ids), CHUNK):
        rows = session.execute(select(*columns).where(CertificateNotice.server_id.in_(server_ids[start:start + CHUNK]),
                                                      CertificateNotice.not_after >= since))
        noticed.update((row.kind, row.server_id, row.name, row.not_after, row.threshold_days) for row in rows)
    return [item for item in items if any((*item.identity, stage) not in noticed for stage in item.due(now))]


# --- a crossing ---------------------------------------------------------------------------------------------


def _row(session: Session, item: Watched) -> Certificate | Domain | None:
    """The item's row if it still has the expiry it was read with (discovery may have moved it since)."""
    if item.kind == "certificate":
        cert = session.get(Certificate, item.row_id)
        same = cert is not None and cert.path == item.name and cert.not_after == item.not_after
        return cert if same else None
    domain = session.get(Domain, item.row_id)
    same = domain is not None and domain.name == item.name and domain.ssl_expiry is not None \
        and domain_expiry(domain.ssl_expiry) == item.not_after
    return domain if same else None


def _insert_notices(session: Session, item: Watched, stages: Iterable[int], now: datetime) -> set[int]:
    """Insert the notices of ``stages``; returns the stages whose row this call made (the others existed)."""
    rows = [{"team_id": item.team_id, "server_id": item.server_id, "kind": item.kind, "name": item.name,
             "not_after": item.not_after, "threshold_days": stage, "created_at": now} for stage in stages]
    if not rows:
        return set()
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(CertificateNotice).values(rows).on_conflict_do_nothing() \
        .returning(CertificateNotice.threshold_days)
    return set(session.scalars(stmt))


def _title(item: Watched, row: Certificate | Domain, hostname: str) -> str:
    what = f"Certificate {row.subject or item.name}" if isinstance(row, Certificate) else f"SSL of {item.name}"
    title = f"{what} on {hostname} expires soon"
    if isinstance(row, Domain) and row.reload_needed:
        title += " (renewed on disk, not reloaded)"
    return title if len(title) <= TITLE_MAX else title[:TITLE_MAX - 1] + "…"


def _message(not_after: datetime, now: datetime) -> str:
    left = days_left(not_after, now)
    if not_after <= now:
        return f"Expired at {isoformat_z(not_after)}"
    return f"Expires at {isoformat_z(not_after)}: {left} day{'s' if left != 1 else ''} left"


@dataclass(frozen=True)
class Shown:
    """The certificate or domain as its GET endpoint shows it, and its server."""

    certificate: CertificateOut | None
    domain: DomainOut | None
    server: ServerRef

    @classmethod
    def of(cls, row: Certificate | Domain, server: Server, today: date) -> Shown:
        ref = ServerRef(id=server.id, hostname=server.hostname)
        return cls(certificate=CertificateOut.of(row, ref, today) if isinstance(row, Certificate) else None,
                   domain=DomainOut.of(row, ref, today) if isinstance(row, Domain) else None, server=ref)


def _report(session: Session, item: Watched, row: Certificate | Domain, shown: Shown, new: set[int],
            now: datetime) -> incidents.Outcome:
    """The certificate's incident: opened at ``INCIDENT_AT`` days (warning), followed up after, critical once
    expired. Its data is what the event says besides the threshold."""
    data = {"certificate": shown.certificate.model_dump(mode="json") if shown.certificate else None,
            "domain": shown.domain.model_dump(mode="json") if shown.domain else None,
            "not_after": isoformat_z(item.not_after), "days_left": days_left(item.not_after, now)}
    problem = incidents.Problem(
        team_id=item.team_id, source=Source.CERTIFICATE, key=item.source_key,
        title=_title(item, row, shown.server.hostname), server_id=item.server_id, service=None, data=data,
        severity=Severity.CRITICAL if EXPIRED in new else Severity.WARNING, message=_message(item.not_after, now))
    return incidents.report(session, problem, at=now)


def watch(session: Session, item: Watched, now: datetime) -> int:
    """Notice the stages ``item`` has newly crossed: its incident for the stages within ``INCIDENT_AT`` days, one
    ``ssl.expiring`` for the tightest threshold. Returns the events recorded (0 or 1)."""
    row = _row(session, item)
    new = _insert_notices(session, item, item.due(now), now) if row is not None else set()
    if row is None or not new:
        return 0
    shown = Shown.of(row, session.get_one(Server, item.server_id), now.date())
    outcome = _report(session, item, row, shown, new, now) if min(new) <= INCIDENT_AT else None
    crossed = [threshold for threshold in THRESHOLDS if threshold in new]
    if not crossed or (outcome is not None and outcome.suppressed):
        # Expiry itself is the incident's (critical) follow-up; an offline server's is its outage incident's.
        return 0
    data = SslExpiringData(certificate=shown.certificate, domain=shown.domain, server=shown.server,
                           not_after=item.not_after, days_left=days_left(item.not_after, now),
                           threshold_days=crossed[-1], incident_id=outcome.incident.id if outcome else None)
    events.record(session, team_id=item.team_id, type=events.SSL_EXPIRING, resource_type=item.kind,
                  resource_id=item.row_id, payload=data.model_dump(mode="json"), at=now, server_id=item.server_id)
    return 1


# --- renewal ------------------------------------------------------------------------------------------------


def open_incidents(session: Session) -> list[int]:
    """The notices of certificates whose incident is open (their 7-day row, not yet resolved)."""
    return list(session.scalars(select(CertificateNotice.id).where(CertificateNotice.threshold_days == INCIDENT_AT,
                                                                   CertificateNotice.resolved_at.is_(None))
                                .order_by(CertificateNotice.id)))


def expiry_of(session: Session, kind: str, server_id: int, name: str) -> datetime | None:
    """What a watched certificate or domain expires at now; None when it is no longer watched."""
    if kind == "certificate":
        return session.scalar(select(Certificate.not_after).where(Certificate.server_id == server_id,
                                                                  Certificate.path == name))
    row = session.execute(select(Domain.ssl_expiry, Domain.reload_needed)
                          .where(Domain.server_id == server_id, Domain.name == name)).one_or_none()
    if row is None or row.ssl_expiry is None:
        return None
    if not row.reload_needed and covers(_certificates_named(session, [server_id]).get(server_id, set()), name):
        return None
    return domain_expiry(row.ssl_expiry)


def settle(session: Session, notice_id: int, now: datetime) -> int:
    """Resolve the incident of a certificate that was renewed past ``INCIDENT_AT`` days or is gone; returns 1 if
    it did. A renewal that is itself close to expiry keeps the incident open: its own notices follow up on it."""
    notice = session.get(CertificateNotice, notice_id)
    if notice is None or notice.resolved_at is not None:
        return 0
    current = expiry_of(session, notice.kind, notice.server_id, notice.name)
    if current == notice.not_after:
        return 0
    claimed = session.scalar(update(CertificateNotice)
                             .where(CertificateNotice.id == notice_id, CertificateNotice.resolved_at.is_(None))
                             .values(resolved_at=now).returning(CertificateNotice.id))
    if claimed is None:
        return 0  # another worker settled it first
    if current is not None and current - now <= timedelta(days=INCIDENT_AT):
        return 0
    message = f"Renewed: now expires at {isoformat_z(current)}" if current else "No longer discovered"
    incidents.recover(session, team_id=notice.team_id, source=Source.CERTIFICATE,
                      key=source_key(notice.kind, notice.server_id, notice.name), at=now, message=message,
                      data={"previous_not_after": isoformat_z(notice.not_after),
                            "not_after": isoformat_z(current) if current else None})
    return 1


# --- retention ----------------------------------------------------------------------------------------------


def forget_stale(session: Session, now: datetime, *, after_id: int, limit: int) -> tuple[int, int | None]:
    """Drop the notices past ``after_id`` (at most ``limit`` looked at) of an expiry ``STALE_AFTER`` ago whose
    certificate or domain has moved on (renewed or gone) and whose incident, if any, is settled. A certificate
    still discovered with that expiry keeps its notices: without them it would fire again. Returns the notices
    dropped and the last id looked at (None once the end is reached)."""
    rows = session.execute(select(CertificateNotice.id, CertificateNotice.kind, CertificateNotice.server_id,
                                  CertificateNotice.name, CertificateNotice.not_after)
                           .where(CertificateNotice.id > after_id, CertificateNotice.not_after < now - STALE_AFTER,
                                  or_(CertificateNotice.threshold_days != INCIDENT_AT,
                                      CertificateNotice.resolved_at.is_not(None)))
                           .order_by(CertificateNotice.id).limit(limit)).all()
    current: dict[tuple[str, int, str], datetime | None] = {}
    stale = []
    for notice_id, kind, server_id, name, not_after in rows:
        if (kind, server_id, name) not in current:
            current[kind, server_id, name] = expiry_of(session, kind, server_id, name)
        if current[kind, server_id, name] != not_after:
            stale.append(notice_id)
    if stale:
        session.execute(delete(CertificateNotice).where(CertificateNotice.id.in_(stale)))
    return len(stale), rows[-1].id if len(rows) == limit else None
