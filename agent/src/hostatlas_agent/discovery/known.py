"""The services the agent recognises by their processes, and what it knows about each of them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import Pattern


@dataclass(frozen=True)
class KnownService:
    """``process`` is matched against the whole process name; ``cmdline``, when set, must also be found in the
    space-joined command line (for names too generic alone, such as ``java`` or postfix's ``master``)."""

    name: str
    process: str
    cmdline: str | None = None
    units: tuple[str, ...] = ()  # fnmatch patterns of systemd unit names
    version_args: tuple[str, ...] | None = None  # None: never run anything to learn the version
    logs: tuple[str, ...] = ()  # default log files (globs); only those that exist are reported

    @property
    def process_re(self) -> Pattern[str]:
        return _compiled(self.process)

    @property
    def cmdline_re(self) -> Pattern[str] | None:
        return _compiled(self.cmdline) if self.cmdline else None

    def matches(self, name: str, cmdline: str) -> bool:
        if not self.process_re.fullmatch(name):
            return False
        pattern = self.cmdline_re
        return pattern is None or pattern.search(cmdline) is not None

    @property
    def process_pattern(self) -> str:
        """A regex the crash watcher searches in a process name or command line to find this service again."""
        return self.cmdline if self.cmdline else f"^(?:{self.process})$"


_CACHE: dict[str, Pattern[str]] = {}


def _compiled(pattern: str) -> Pattern[str]:
    compiled = _CACHE.get(pattern)
    if compiled is None:
        compiled = _CACHE[pattern] = re.compile(pattern)
    return compiled


# Order matters: the first entry that matches a process claims it, so the entries that need a command line
# come before the ones matching on a name alone.
KNOWN_SERVICES: tuple[KnownService, ...] = (
    KnownService("hostatlas", r".+", cmdline=r"(?:^|[/\s])hostatlas\s+serve(?:\s|$)", units=("hostatlas.service",)),
    KnownService("rabbitmq", r"beam\.smp|beam", cmdline=r"rabbit", units=("rabbitmq-server.service",),
                 logs=("/var/log/rabbitmq/*.log",)),
    KnownService("elasticsearch", r"java", cmdline=r"org\.elasticsearch\.", units=("elasticsearch.service",),
                 logs=("/var/log/elasticsearch/*.log",)),
    KnownService("postfix", r"master", cmdline=r"postfix", units=("postfix.service", "postfix@*.service"),
                 logs=("/var/log/mail.log", "/var/log/maillog")),
    KnownService("nginx", r"nginx", units=("nginx.service",), version_args=("-v",),
                 logs=("/var/log/nginx/error.log", "/var/log/nginx/access.log")),
    KnownService("apache2", r"apache2", units=("apache2.service", "apache2@*.service"), version_args=("-v",),
                 logs=("/var/log/apache2/error.log", "/var/log/apache2/access.log")),
    KnownService("httpd", r"httpd", units=("httpd.service",), version_args=("-v",),
                 logs=("/var/log/httpd/error_log", "/var/log/httpd/access_log")),
    KnownService("postgresql", r"postgres|postmaster",
                 units=("postgresql@*.service", "postgresql-*.service", "postgresql.service"),
                 version_args=("--version",), logs=("/var/log/postgresql/*.log",)),
    KnownService("mysql", r"mysqld", units=("mysql.service", "mysqld.service"), version_args=("--version",),
                 logs=("/var/log/mysql/error.log", "/var/log/mysqld.log")),
    KnownService("mariadb", r"mariadbd", units=("mariadb.service",), version_args=("--version",),
                 logs=("/var/log/mysql/error.log", "/var/log/mariadb/mariadb.log")),
    KnownService("redis", r"redis-server", units=("redis-server.service", "redis.service", "redis@*.service"),
                 version_args=("--version",), logs=("/var/log/redis/redis-server.log", "/var/log/redis/redis.log")),
    KnownService("mongodb", r"mongod", units=("mongod.service", "mongodb.service"), version_args=("--version",),
                 logs=("/var/log/mongodb/mongod.log",)),
    KnownService("memcached", r"memcached", units=("memcached.service",), version_args=("-V",),
                 logs=("/var/log/memcached.log",)),
    KnownService("haproxy", r"haproxy", units=("haproxy.service",), version_args=("-v",),
                 logs=("/var/log/haproxy.log",)),
    KnownService("caddy", r"caddy", units=("caddy.service",), version_args=("version",)),
    KnownService("traefik", r"traefik", units=("traefik.service",), version_args=("version",)),
    KnownService("php-fpm", r"php-fpm[\d.]*", units=("php*-fpm.service", "php-fpm.service"),
                 version_args=("-v",), logs=("/var/log/php*-fpm.log",)),
    KnownService("sshd", r"sshd", units=("ssh.service", "sshd.service"), version_args=("-V",),
                 logs=("/var/log/auth.log", "/var/log/secure")),
    KnownService("docker", r"dockerd", units=("docker.service",), version_args=("--version",)),
    KnownService("containerd", r"containerd", units=("containerd.service",), version_args=("--version",)),
    KnownService("clickhouse", r"clickhouse(?:-serv(?:er)?)?", cmdline=r"server",
                 units=("clickhouse-server.service",), version_args=("--version",),
                 logs=("/var/log/clickhouse-server/clickhouse-server.log",
                       "/var/log/clickhouse-server/clickhouse-server.err.log")),
    KnownService("prometheus", r"prometheus", units=("prometheus.service",), version_args=("--version",)),
    KnownService("grafana", r"grafana(?:-server)?", units=("grafana-server.service", "grafana.service"),
                 version_args=("-v",), logs=("/var/log/grafana/grafana.log",)),
    KnownService("node_exporter", r"node_exporter|prometheus-node-exporter|prometheus-node",
                 units=("node_exporter.service", "prometheus-node-exporter.service"), version_args=("--version",)),
    KnownService("cron", r"cron|crond", units=("cron.service", "crond.service")),
    KnownService("dovecot", r"dovecot", units=("dovecot.service",), version_args=("--version",),
                 logs=("/var/log/dovecot.log",)),
    KnownService("named", r"named", units=("named.service", "bind9.service"), version_args=("-v",),
                 logs=("/var/log/named/*.log",)),
    KnownService("unbound", r"unbound", units=("unbound.service",), version_args=("-V",)),
)

BY_NAME = {service.name: service for service in KNOWN_SERVICES}


def match_known(name: str, cmdline: str) -> KnownService | None:
    for service in KNOWN_SERVICES:
        if service.matches(name, cmdline):
            return service
    return None
