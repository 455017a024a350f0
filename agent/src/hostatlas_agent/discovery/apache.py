"""Apache httpd configuration: ``Include``/``IncludeOptional`` expansion (relative to ``ServerRoot``), variables
(``Define`` and Debian's ``envvars``), ``<VirtualHost>`` sections and the log files the config names."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .model import VirtualHost
from .once import warn_once
from .webconfig import WebConfig, handshake_address, is_loggable_path, read_config_file

log = logging.getLogger("hostatlas_agent.discovery.apache")

MAX_DEPTH = 16
MAX_FILES = 1000
_WORD_RE = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
_VAR_RE = re.compile(r"\$\{(\w+)\}")
_EXPORT_RE = re.compile(r"^\s*export\s+(\w+)=(.*)$")
_SHELL_VAR_RE = re.compile(r"\$\{?(\w+)\}?")

Event = tuple[str, str, list[str]]  # ("directive" | "open" | "close", lower-cased name, arguments)


@dataclass
class _Reader:
    server_root: str
    variables: dict[str, str] = field(default_factory=dict)
    files: int = 0

    def events(self, path: str, chain: list[str]) -> Iterator[Event]:
        if path in chain or len(chain) >= MAX_DEPTH or self.files >= MAX_FILES:
            warn_once(log, "Apache include loop or limit at %s", path)
            return
        self.files += 1
        text = read_config_file(path)
        if text is None:
            return
        for line in _logical_lines(text):
            words = [self._substitute(m.group(1) if m.group(1) is not None else m.group(2))
                     for m in _WORD_RE.finditer(line)]
            if not words:
                continue
            if words[0].startswith("</"):
                yield ("close", words[0][2:].rstrip(">").lower(), [])
                continue
            if words[0].startswith("<"):
                args = words[1:]
                if args:
                    args[-1] = args[-1].rstrip(">")
                yield ("open", words[0][1:].rstrip(">").lower(), [a for a in args if a])
                continue
            name, args = words[0].lower(), words[1:]
            if name == "serverroot" and args:
                self.server_root = args[0]
            elif name == "define" and args:
                self.variables[args[0]] = args[1] if len(args) > 1 else ""
            elif name in ("include", "includeoptional") and args:
                for included in self._targets(args[0]):
                    yield from self.events(included, chain + [path])
                continue
            yield ("directive", name, args)

    def _substitute(self, word: str) -> str:
        return _VAR_RE.sub(lambda m: self.variables.get(m.group(1), m.group(0)), word)

    def _targets(self, pattern: str) -> list[str]:
        full = pattern if os.path.isabs(pattern) else os.path.join(self.server_root, pattern)
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        files: list[str] = []
        for match in matches:
            if os.path.isdir(match):  # a directory includes every file below it
                for root, dirs, names in os.walk(match):
                    dirs.sort()
                    files.extend(os.path.join(root, name) for name in sorted(names))
            elif os.path.isfile(match):
                files.append(match)
        return files

    def resolve(self, value: str) -> str:
        return value if os.path.isabs(value) else os.path.join(self.server_root, value)


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line and not line.startswith("#"):
            yield line


def _envvars(server_root: str) -> dict[str, str]:
    """Debian starts Apache through /etc/apache2/envvars, which sets ${APACHE_LOG_DIR} and friends."""
    variables: dict[str, str] = {}
    text = read_config_file(os.path.join(server_root, "envvars"))
    for line in (text or "").splitlines():
        found = _EXPORT_RE.match(line)
        if found:
            value = found.group(2).strip().strip("'\"")
            variables[found.group(1)] = _SHELL_VAR_RE.sub(lambda m: variables.get(m.group(1), ""), value)
    return variables


def read_apache(paths: Sequence[str]) -> WebConfig:
    """Virtual hosts and log files of the Apache configs at ``paths`` (absent ones are skipped)."""
    result = WebConfig()
    for path in paths:
        if not os.path.isfile(path):
            continue
        root = os.path.dirname(os.path.abspath(path))
        reader = _Reader(server_root=root, variables=_envvars(root))
        _consume(reader.events(os.path.abspath(path), []), reader, path, result)
    return result


def _consume(events: Iterator[Event], reader: _Reader, path: str, result: WebConfig) -> None:
    vhost: VirtualHost | None = None
    ssl_engine = False
    global_certificate: str | None = None
    addresses: list[str] = []
    for kind, name, args in events:
        if kind == "open" and name == "virtualhost":
            vhost, ssl_engine, addresses = VirtualHost(source="apache", config_file=path), False, args
        elif kind == "close" and name == "virtualhost" and vhost is not None:
            _finish(vhost, addresses, ssl_engine, global_certificate)
            result.vhosts.append(vhost)
            vhost = None
        elif kind != "directive":
            continue
        elif name in ("errorlog", "customlog", "transferlog") and args:
            _add_log(args[0], reader, result.log_paths)
            if vhost is not None:
                _add_log(args[0], reader, vhost.log_paths)
        elif name == "sslcertificatefile" and args:
            if vhost is not None:
                vhost.certificate_path = reader.resolve(args[0])
            else:
                global_certificate = reader.resolve(args[0])
        elif vhost is None:
            continue
        elif name == "servername" and args:
            vhost.server_names.insert(0, _host_of(args[0]))
        elif name == "serveralias":
            vhost.server_names.extend(_host_of(arg) for arg in args)
        elif name == "sslengine" and args:
            ssl_engine = args[0].lower() == "on"


def _finish(vhost: VirtualHost, addresses: list[str], ssl_engine: bool, global_certificate: str | None) -> None:
    for address in addresses or ["*:80"]:
        host, _, port_text = address.rpartition(":") if not address.endswith("]") else (address, "", "80")
        if not host:
            host, port_text = address, "80"
        if not port_text.isdigit():
            continue
        port = int(port_text)
        vhost.ports.append(port)
        if ssl_engine:
            vhost.ssl_endpoints.append((handshake_address(host.strip("[]")), port))
    if ssl_engine and vhost.certificate_path is None:
        vhost.certificate_path = global_certificate


def _host_of(name: str) -> str:
    """``https://www.example.com:443`` -> ``www.example.com`` (ServerName may carry a scheme and a port)."""
    name = name.split("://", 1)[-1]
    if name.startswith("["):
        return name
    return name.split(":", 1)[0]


def _add_log(value: str, reader: _Reader, into: list[str]) -> None:
    if value.startswith(("|", "syslog")) or "${" in value:
        return
    path = reader.resolve(value)
    if is_loggable_path(path):
        into.append(path)
