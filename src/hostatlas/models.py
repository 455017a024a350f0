"""Imports every feature's models so the metadata is complete for Alembic and the test fixtures."""

from hostatlas.agentconfig.models import AgentConfigOverride
from hostatlas.alerts.models import AlertRule, AlertState, AlertTransition
from hostatlas.apikeys.models import ApiKey
from hostatlas.certwatch.models import CertificateNotice
from hostatlas.db.base import Base
from hostatlas.events.models import Event
from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatPing, HeartbeatTag
from hostatlas.incidents.models import Incident, IncidentEntry
from hostatlas.inventory.models import Certificate, Container, Domain, InventoryChange, Service
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.servers.models import AgentToken, Server, ServerTag
from hostatlas.teams.models import Team
from hostatlas.users.models import Membership, User
from hostatlas.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery

metadata = Base.metadata

__all__ = ["AgentConfigOverride", "AgentToken", "ApiKey", "Certificate", "Container", "Domain", "Event",
           "AlertRule", "AlertState", "AlertTransition", "CertificateNotice",
           "Heartbeat", "HeartbeatFlip", "HeartbeatPing", "HeartbeatTag", "Incident", "IncidentEntry",
           "InventoryChange", "Membership", "QuarantinedItem",
           "Server", "ServerTag", "Service", "Team", "User", "Webhook", "WebhookAttempt", "WebhookDelivery", "metadata"]
