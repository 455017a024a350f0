"""nginx configuration: a tokenizer and parser for its block syntax, ``include`` expansion, and the virtual hosts
(server blocks) and log files it declares."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .model import VirtualHost
from .once import warn_once
from .webconfig import WebConfig, handshake_address, is_loggable_path, read_config_file

log = logging.getLogger("hostatlas_agent.discovery.nginx")

MAX_DEPTH = 16
MAX_FILES = 1000


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None
    file: str = ""


@dataclass
class _Load:
    prefix: str  # the directory of the main nginx.conf: where nginx resolves relative paths
    files: int = 0


def tokenize(text: str) -> Iterator[str]:
    """Words, quoted strings (unquoted) and the three punctuation tokens ``{ } ;``. ``#`` starts a comment
    where a token could start; ``${var}`` stays inside its word."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch in "{};":
            yield ch
            i += 1
        elif ch in "\"'":
            word: list[str] = []
            i += 1
            while i < n and text[i] != ch:
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                word.append(text[i])
                i += 1
            i += 1
            yield "".join(word)
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in ";{}":
                i += 1
                if text[i - 1] == "$" and i < n and text[i] == "{":
                    close = text.find("}", i)
                    i = n if close < 0 else close + 1
            yield text[start:i]


def parse(text: str, path: str = "") -> list[Directive]:
    """The directive tree of one file (includes not expanded). Unbalanced braces end the block silently."""
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    for token in tokenize(text):
        if token == ";":
            if words:
                stack[-1].append(Directive(words[0], words[1:], None, path))
            words = []
        elif token == "{":
            block: list[Directive] = []
            stack[-1].append(Directive(words[0] if words else "", words[1:], block, path))
            stack.append(block)
            words = []
        elif token == "}":
            words = []
            if len(stack) > 1:
                stack.pop()
        else:
            words.append(token)
    return stack[0]


def load(path: str) -> list[Directive]:
    """The tree of ``path`` with every ``include`` replaced by the directives of the files it names."""
    state = _Load(prefix=os.path.dirname(os.path.abspath(path)))
    return _load_file(os.path.abspath(path), state, [])


def _load_file(path: str, state: _Load, chain: list[str]) -> list[Directive]:
    if path in chain or len(chain) >= MAX_DEPTH:
        warn_once(log, "nginx include loop or depth limit at %s", path)
        return []
    if state.files >= MAX_FILES:
        return []
    state.files += 1
    text = read_config_file(path)
    if text is None:
        return []
    return _expand(parse(text, path), state, chain + [path])


def _expand(directives: list[Directive], state: _Load, chain: list[str]) -> list[Directive]:
    out: list[Directive] = []
    for directive in directives:
        if directive.name == "include" and directive.block is None and directive.args:
            for included in _include_targets(directive.args[0], os.path.dirname(chain[-1]), state.prefix):
                out.extend(_load_file(included, state, chain))
        else:
            if directive.block is not None:
                directive.block = _expand(directive.block, state, chain)
            out.append(directive)
    return out


def _include_targets(pattern: str, including_dir: str, prefix: str) -> list[str]:
    bases = [pattern] if os.path.isabs(pattern) else [os.path.join(prefix, pattern), os.path.join(including_dir,
                                                                                                  pattern)]
    for candidate in bases:
        matches = sorted(glob.glob(candidate)) if glob.has_magic(candidate) else (
            [candidate] if os.path.isfile(candidate) else [])
        if matches:
            return [m for m in matches if os.path.isfile(m)]
    return []


def read_nginx(paths: Sequence[str]) -> WebConfig:
    """Virtual hosts and log files of the nginx configs at ``paths`` (absent ones are skipped)."""
    result = WebConfig()
    for path in paths:
        if not os.path.isfile(path):
            continue
        prefix = os.path.dirname(os.path.abspath(path))
        _walk(load(path), prefix, _Inherited(), result)
    return result


@dataclass
class _Inherited:
    certificate: str | None = None
    ssl_on: bool = False


def _walk(directives: list[Directive], prefix: str, inherited: _Inherited, result: WebConfig) -> None:
    for d in directives:
        if d.name in ("error_log", "access_log") and d.args:
            _add_log(d.args[0], prefix, result.log_paths)
    scope = _Inherited(_certificate(directives, prefix) or inherited.certificate,
                       _ssl_on(directives) or inherited.ssl_on)
    for d in directives:
        if d.block is None or d.name in ("upstream", "map", "types", "geo", "split_clients", "mail", "stream"):
            continue
        if d.name == "server":
            vhost = _vhost(d, prefix, scope)
            result.vhosts.append(vhost)
            result.log_paths.extend(vhost.log_paths)
        else:
            _walk(d.block, prefix, scope, result)


def _vhost(server: Directive, prefix: str, inherited: _Inherited) -> VirtualHost:
    body = server.block or []
    vhost = VirtualHost(source="nginx", config_file=server.file)
    ssl_on = _ssl_on(body) or inherited.ssl_on
    listens = [d.args for d in body if d.name == "listen" and d.args] or [["80"]]
    for args in listens:
        endpoint = _listen_endpoint(args[0])
        if endpoint is None or "quic" in args[1:]:
            continue
        vhost.ports.append(endpoint[1])
        if ssl_on or "ssl" in args[1:]:
            vhost.ssl_endpoints.append(endpoint)
    for d in body:
        if d.name == "server_name":
            vhost.server_names.extend(d.args)
    vhost.certificate_path = _certificate(body, prefix) or inherited.certificate
    _collect_logs(body, prefix, vhost.log_paths)
    return vhost


def _collect_logs(directives: list[Directive], prefix: str, into: list[str]) -> None:
    for d in directives:
        if d.name in ("error_log", "access_log") and d.args:
            _add_log(d.args[0], prefix, into)
        if d.block is not None:
            _collect_logs(d.block, prefix, into)


def _add_log(value: str, prefix: str, into: list[str]) -> None:
    if value in ("off", "stderr") or value.startswith(("syslog:", "memory:")):
        return
    path = value if os.path.isabs(value) else os.path.join(prefix, value)
    if is_loggable_path(path):
        into.append(path)


def _certificate(directives: list[Directive], prefix: str) -> str | None:
    for d in directives:
        if d.name == "ssl_certificate" and d.args and "$" not in d.args[0] and not d.args[0].startswith("data:"):
            value = d.args[0]
            return value if os.path.isabs(value) else os.path.join(prefix, value)
    return None


def _ssl_on(directives: list[Directive]) -> bool:
    return any(d.name == "ssl" and d.args[:1] == ["on"] for d in directives)


def _listen_endpoint(address: str) -> tuple[str, int] | None:
    """(where to connect, port) of a ``listen`` address: ``443``, ``*:443``, ``[::]:443``, ``10.0.0.1:8443``,
    ``localhost``; None for unix sockets and nonsense."""
    if address.startswith("unix:"):
        return None
    host, port_text = "", "80"
    if address.startswith("["):
        close = address.find("]")
        host = address[1:close]
        if address[close + 1:close + 2] == ":":
            port_text = address[close + 2:]
    elif ":" in address:
        host, port_text = address.rsplit(":", 1)
    elif address.isdigit():
        port_text = address
    else:
        host = address
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return handshake_address(host), int(port_text)
