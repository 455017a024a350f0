"""The agent API (/api/v1/agent/...): enrolment, check-ins, discovery and config pull."""
