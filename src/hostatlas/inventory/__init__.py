"""What agents discover on a server: services, domains, containers and certificates, with history."""
