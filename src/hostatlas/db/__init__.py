"""Storage: engine, sessions, declarative base and Alembic migrations."""
