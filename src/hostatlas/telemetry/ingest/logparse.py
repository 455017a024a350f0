"""Turn one raw log line, as an agent streams it, into a timestamp, a level, a message and fields.

Formats are detected from the content alone: the first characters pick at most a few anchored regexes
to try, and a line none of them matches is ``plain``.

- ``nginx_access`` (combined or common, optionally followed by more fields ending in $request_time):
  message ``"<method> <path> <status>"``, or ``"<request line> <status>"`` when the request line is not
  ``METHOD PATH PROTOCOL``. Fields remote_addr, remote_user (unless "-"), method, path, protocol,
  status (int), bytes (int), referer and user_agent (combined only, left out where nginx wrote "-"),
  request_time (float, when the line ends in a number). Level: 5xx error, 4xx warning, else info.
- ``nginx_error``: message is the text before nginx's trailing ``, client: ...`` pairs. Fields pid, tid,
  connection_id (ints; connection_id is the ``*N``, when present), then each trailing pair (client,
  server, request, upstream, host, ...) with its quotes removed. nginx's local time is taken as UTC.
- ``syslog``: RFC 3164 (``Mar 21 14:32:01 host app[pid]: msg``), RFC 5424, and the ISO-timestamp
  variant rsyslog writes, each with or without ``<PRI>``. Fields host, app, pid (int) when present (a
  3164 line may leave the host out: ``Mar 21 14:32:01 sshd[7]: msg``); RFC 5424 adds msgid and each
  structured-data param as ``"<sd-id>.<param>"`` (pid stays a string when PROCID is not a number).
  Level from the PRI severity, else from level words in the message. RFC 3164 has no year: ``year``
  when given, else the current UTC year, or the previous one when that would put the line more than a
  day in the future.
- ``json``: a line starting with ``{`` that is a JSON object. Level, ts and message each come from the
  first key of their list whose value is understood (see ``_JSON_*_KEYS``); such a key is not repeated
  in fields. No message key: the whole line is the message. No level key: level words in the message.
  Numeric ts: seconds, or millis/micros/nanos told apart by magnitude; numeric level: syslog severity
  (0-7) or pino/bunyan (10-60). Other top-level keys become fields, at most 32, in document order:
  strings and numbers as they are, booleans "true"/"false", objects and arrays as compact JSON text,
  nulls left out. Other JSON (arrays, invalid text) is ``plain``.
- ``plain``: anything else. ts only from a leading ISO-8601 timestamp, which is then cut from the message.

Levels are always one of ``contract.LEVELS``, "info" when nothing says otherwise. Level words are whole
words, any case, in the first 80 characters of the message; the leftmost wins. Timestamps without a
zone are taken as UTC. Messages and string field values are cut to 8 KiB of UTF-8 at a character
boundary. ``parse_line`` never raises, and takes time linear in the line's length: every format regex
is matched at a fixed position rather than searched for, and none repeats a group that can match the
same text in more than one way. Parsed timestamps are cached per second (bounded), as a stream repeats them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from hostatlas.clock import now_unix
from hostatlas.telemetry.ingest.logtime import (
    ISO,
    ISO_BODY,
    MONTHS,
    days_from_civil,
    epoch,
    iso_ts,
    remember,
    zone_offset,
)
from hostatlas.telemetry.storage.contract import LEVELS

FieldValue = str | int | float
T = TypeVar("T")

MAX_TEXT_BYTES = 8192
MAX_FIELDS = 32
LEVEL_WINDOW = 80  # further in, a level word is more often the message talking about errors than a level
_SAFE_CHARS = MAX_TEXT_BYTES // 4  # a str this short cannot exceed MAX_TEXT_BYTES (4 bytes per char at most)

__all__ = ["LEVELS", "MAX_FIELDS", "MAX_TEXT_BYTES", "ParsedLine", "parse_line"]


@dataclass(frozen=True, slots=True)
class ParsedLine:
    ts: float | None
    level: str
    message: str
    fields: dict[str, FieldValue]
    format: str


# A frozen dataclass's __init__ assigns through object.__setattr__, which costs ~1 us per line on the
# ingestion hot path; writing the slots through their descriptors builds the same object in half that.
_SLOTS: Any = ParsedLine.__dict__
_set_ts, _set_level, _set_message, _set_fields, _set_format = (
    _SLOTS[name].__set__ for name in ("ts", "level", "message", "fields", "format"))
_new = object.__new__


def _line(ts: float | None, level: str, message: str, fields: dict[str, FieldValue], kind: str) -> ParsedLine:
    parsed: ParsedLine = _new(ParsedLine)
    _set_ts(parsed, ts)
    _set_level(parsed, level)
    _set_message(parsed, message if len(message) <= _SAFE_CHARS else _cap(message))
    _set_fields(parsed, fields)
    _set_format(parsed, kind)
    return parsed


def _cap(text: str) -> str:
    """At most MAX_TEXT_BYTES of UTF-8, cut before a character, never inside one."""
    if len(text) <= _SAFE_CHARS:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_TEXT_BYTES:
        return text
    end = MAX_TEXT_BYTES
    while data[end] & 0xC0 == 0x80:  # a continuation byte: back off to the start of its character
        end -= 1
    return data[:end].decode("utf-8", "surrogatepass")


# --- levels -------------------------------------------------------------------------------------------

_LEVEL_NAMES = {
    "debug": "debug", "trace": "debug",
    "info": "info", "information": "info", "informational": "info",
    "notice": "notice",
    "warn": "warning", "warning": "warning",
    "err": "error", "error": "error",
    "crit": "critical", "critical": "critical", "fatal": "critical", "alert": "critical",
    "emerg": "critical", "emergency": "critical", "panic": "critical",
}
_SYSLOG_SEVERITY = ("critical", "critical", "critical", "error", "warning", "notice", "info", "debug")
_STATUS_LEVEL = ("info", "info", "info", "info", "warning", "error", "info", "info", "info", "info")

# Level words are found by splitting the window's UTF-8 bytes into words: one C-level translate maps
# ASCII letters to lower case and every byte but [a-z0-9_] to a space, so words end where a regex \b
# would, and a set test clears the usual line with no level word at all. A case-insensitive regex
# alternation costs several times more, since it is tried at every position.
_WORD_BYTES = bytes(
    byte + 32 if 65 <= byte <= 90 else byte if 97 <= byte <= 122 or 48 <= byte <= 57 or byte == 95 else 32
    for byte in range(256))
_LEVEL_WORDS = {name.encode(): level for name, level in _LEVEL_NAMES.items()}
_LEVEL_WORD_SET = frozenset(_LEVEL_WORDS)


def _level_from_words(text: str) -> str:
    words = text[:LEVEL_WINDOW].encode("utf-8", "surrogatepass").translate(_WORD_BYTES).split()
    if not _LEVEL_WORD_SET.isdisjoint(words):
        for word in words:
            if word in _LEVEL_WORD_SET:
                return _LEVEL_WORDS[word]
    return "info"


def _level_from_pri(pri: str | None, message: str) -> str:
    if pri is not None:
        value = int(pri)
        if value <= 191:  # facility 23 is the highest: a larger number is not a PRI to trust
            return _SYSLOG_SEVERITY[value & 7]
    return _level_from_words(message)


# --- nginx access -------------------------------------------------------------------------------------

# nginx writes '"' inside quoted variables as \x22, so [^"]* cannot cut a value short.
_NGINX_ACCESS = re.compile(
    r'([^ ]+) [^ ]+ ([^ ]+) \[([^\]]*)\] "(?:([^ "]+) ([^ "]+) ([^ "]+)|([^"]*))" (\d{3}) (\d{1,20}|-)'
    r'(?: "([^"]*)" "([^"]*)")?', re.ASCII)
_ACCESS_STAMP = re.compile(r"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d{4})\Z", re.ASCII)
_ACCESS_TS: dict[str, float | None] = {}
_NUMBER = re.compile(r"\d{1,30}(?:\.\d{1,30})?\Z", re.ASCII)


def _access_ts(stamp: str) -> float | None:
    """Epoch of "21/Mar/2026:14:32:01 +0000", cached whole: lines of one second share it."""
    try:
        return _ACCESS_TS[stamp]
    except KeyError:
        pass
    ts = None
    match = _ACCESS_STAMP.match(stamp)
    if match is not None and match.group(2) in MONTHS:
        day, month, year, hour, minute, second, zone = match.groups()
        ts = epoch(int(year), MONTHS[month], int(day), int(hour), int(minute), int(second))
        ts = None if ts is None else ts - zone_offset(zone)
    return remember(_ACCESS_TS, stamp, ts)


def _parse_nginx_access(line: str) -> ParsedLine | None:
    match = _NGINX_ACCESS.match(line)
    if match is None:
        return None
    end = match.end()
    more = end < len(line)
    if more and line[end] != " ":  # "200 512abc": not an access line after all
        return None
    addr, user, stamp, method, path, protocol, request, status_text, size, referer, agent = match.groups()
    status = int(status_text)
    fields: dict[str, FieldValue]
    if request is None:  # "METHOD PATH PROTOCOL"
        fields = {"remote_addr": addr, "method": method, "path": path, "protocol": protocol, "status": status}
        message = f"{method} {path} {status_text}"
    else:  # "-", a bare path, TLS bytes sent to the HTTP port...
        fields = {"remote_addr": addr, "status": status}
        message = f"{request} {status_text}"
    if size != "-":
        fields["bytes"] = int(size)
    if user != "-":
        fields["remote_user"] = user
    if referer is not None:
        if referer != "-":
            fields["referer"] = referer if len(referer) <= _SAFE_CHARS else _cap(referer)
        if agent != "-":
            fields["user_agent"] = agent if len(agent) <= _SAFE_CHARS else _cap(agent)
    if more:  # extra fields; a custom log_format conventionally ends in $request_time
        last = line.rpartition(" ")[2]
        if _NUMBER.match(last):
            fields["request_time"] = float(last)
    return _line(_access_ts(stamp), _STATUS_LEVEL[status // 100], message, fields, "nginx_access")


# --- nginx error --------------------------------------------------------------------------------------

_NGINX_ERROR = re.compile(
    r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[([a-z]{1,16})\] (\d{1,10})#(\d{1,10}): (?:\*(\d{1,20}) )?", re.ASCII)
_NGINX_PAIR = re.compile(r'([a-z_]+): (?:"([^"]*)"|([^,]*))(?:, |\Z)', re.ASCII)
_NGINX_LEVELS = {"emerg": "critical", "alert": "critical", "crit": "critical", "error": "error",
                 "warn": "warning", "notice": "notice", "info": "info", "debug": "debug"}
_ERROR_TS: dict[str, float | None] = {}


def _error_ts(stamp: str) -> float | None:
    """nginx writes local time with no zone; taken as UTC, the zone hosts are expected to log in."""
    try:
        return _ERROR_TS[stamp]
    except KeyError:
        pass
    return remember(_ERROR_TS, stamp, epoch(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]),
                                              int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19])))


def _nginx_pairs(line: str, position: int, fields: dict[str, FieldValue]) -> None:
    """The ", client: X, server: Y, request: "..." ..." tail nginx appends in a request's context."""
    while len(fields) < MAX_FIELDS and position < len(line):
        match = _NGINX_PAIR.match(line, position)
        if match is None:
            return
        key, quoted, bare = match.groups()
        fields[key] = _cap(bare if quoted is None else quoted)
        position = match.end()


def _parse_nginx_error(line: str) -> ParsedLine | None:
    match = _NGINX_ERROR.match(line)
    if match is None:
        return None
    stamp, word, pid, tid, connection = match.groups()
    fields: dict[str, FieldValue] = {"pid": int(pid), "tid": int(tid)}
    if connection is not None:
        fields["connection_id"] = int(connection)
    start = match.end()
    pairs_at = line.find(", client: ", start)
    if pairs_at < 0:
        message = line[start:]
    else:
        message = line[start:pairs_at]
        _nginx_pairs(line, pairs_at + 2, fields)
    level = _NGINX_LEVELS.get(word) or _level_from_words(message)
    return _line(_error_ts(stamp), level, message, fields, "nginx_error")


# --- syslog -------------------------------------------------------------------------------------------

_PRI = r"(?:<(\d{1,3})>)?"
_TAG = r"([^\s\[\]:]+)(?:\[(\d{1,10})\])?:(?: |\Z)"  # "app[pid]: " or "app: "
_RFC3164 = re.compile(_PRI + r"([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (\S+) (?:" + _TAG + ")?", re.ASCII)
_HOSTLESS_TAG = re.compile(r"([^\s\[\]:]+)(?:\[(\d{1,10})\])?:\Z", re.ASCII)
_SYSLOG_ISO = re.compile(_PRI + ISO_BODY + r" (\S+) " + _TAG, re.ASCII)
_RFC5424 = re.compile(r"<(\d{1,3})>\d{1,2} (\S+) (\S+) (\S+) (\S+) (\S+) ", re.ASCII)
_SD_ELEMENT = re.compile(r'\[([^\s=\]"]+)', re.ASCII)
_SD_PARAM = re.compile(r' ([^\s=\]"]+)="((?:[^"\\]|\\.)*)"', re.ASCII | re.DOTALL)
_SD_UNESCAPE = re.compile(r'\\(["\\\]])')
_RFC3164_TS: dict[tuple[str, int], float | None] = {}  # (stamp, year) -> epoch
# The current UTC year, its [start, end) in epoch seconds, and stamp -> epoch in that year: the hot
# path's cache. A new year brings a new tuple and dict, so a thread still on the old one cannot taint it.
_this_year: tuple[int, float, float, dict[str, float | None]] = (0, 0.0, 0.0, {})


def _rfc3164_epoch(stamp: str, year: int) -> float | None:
    key = (stamp, year)
    try:
        return _RFC3164_TS[key]
    except KeyError:
        pass
    return remember(_RFC3164_TS, key, epoch(year, MONTHS.get(stamp[0:3], 0), int(stamp[4:6]),
                                              int(stamp[7:9]), int(stamp[10:12]), int(stamp[13:15])))


def _current_year(now: float) -> tuple[int, float, float, dict[str, float | None]]:
    global _this_year
    if not _this_year[1] <= now < _this_year[2]:
        year = time.gmtime(now).tm_year
        _this_year = (year, days_from_civil(year, 1, 1) * 86400.0, days_from_civil(year + 1, 1, 1) * 86400.0, {})
    return _this_year


def _rfc3164_ts(stamp: str, year: int | None) -> float | None:
    if year is not None:
        return _rfc3164_epoch(stamp, year)
    now = now_unix()
    current, _, _, cache = _current_year(now)
    try:
        ts = cache[stamp]
    except KeyError:
        ts = remember(cache, stamp, _rfc3164_epoch(stamp, current))
    if ts is None or ts > now + 86400:  # a December line read in January, or Feb 29 of a past leap year
        ts = _rfc3164_epoch(stamp, current - 1)
    return ts


def _tag_fields(host: str, app: str | None, pid: str | None) -> dict[str, FieldValue]:
    if app is None:
        return {"host": host}
    return {"host": host, "app": app} if pid is None else {"host": host, "app": app, "pid": int(pid)}


def _parse_rfc3164(line: str, year: int | None) -> ParsedLine | None:
    match = _RFC3164.match(line)
    if match is None:
        return None
    pri, stamp, host, app, pid = match.groups()
    message = line[match.end():]
    fields = _tag_fields(host, app, pid)
    if host[-1] == ":" and (tag := _HOSTLESS_TAG.match(host)) is not None:  # "Mar 21 14:32:01 sshd[7]: msg"
        fields = {"app": tag.group(1)} if tag.group(2) is None else {"app": tag.group(1), "pid": int(tag.group(2))}
        message = line[match.end(3) + 1:]
    level = _level_from_words(message) if pri is None else _level_from_pri(pri, message)
    return _line(_rfc3164_ts(stamp, year), level, message, fields, "syslog")


def _parse_syslog_iso(line: str) -> ParsedLine | None:
    match = _SYSLOG_ISO.match(line)
    if match is None:
        return None
    pri, stamp, fraction, zone, host, app, pid = match.groups()
    if host.lower() in _LEVEL_NAMES:  # "2026-03-21T10:00:00Z ERROR db: ..." is an app's own log line
        return None
    message = line[match.end():]
    level = _level_from_words(message) if pri is None else _level_from_pri(pri, message)
    return _line(iso_ts(stamp, fraction, zone), level, message, _tag_fields(host, app, pid), "syslog")


def _structured_data(line: str, position: int, fields: dict[str, FieldValue]) -> int:
    """Parse RFC 5424 STRUCTURED-DATA at position into fields; where MSG starts, or -1 if malformed."""
    if line.startswith("-", position):
        return position + 1
    found: dict[str, FieldValue] = {}
    element = _SD_ELEMENT.match(line, position)
    if element is None:
        return -1
    while element is not None:
        position = element.end()
        while param := _SD_PARAM.match(line, position):
            name, value = param.groups()
            if len(fields) + len(found) < MAX_FIELDS:
                found[f"{element.group(1)}.{name}"] = _cap(_SD_UNESCAPE.sub(r"\1", value) if "\\" in value else value)
            position = param.end()
        if not line.startswith("]", position):
            return -1
        element = _SD_ELEMENT.match(line, position + 1)
        position += 1
    fields.update(found)
    return position


def _parse_rfc5424(line: str) -> ParsedLine | None:
    match = _RFC5424.match(line)
    if match is None:
        return None
    pri, stamp, host, app, procid, msgid = match.groups()
    fields: dict[str, FieldValue] = {}
    if host != "-":
        fields["host"] = host
    if app != "-":
        fields["app"] = app
    if procid != "-":
        # PROCID is often a pid but may be any token; 19 digits keeps int() far from its size limit
        fields["pid"] = int(procid) if len(procid) <= 19 and procid.isascii() and procid.isdigit() else procid
    if msgid != "-":
        fields["msgid"] = msgid
    message_at = _structured_data(line, match.end(), fields)
    if message_at < 0:  # malformed STRUCTURED-DATA: keep all that follows the header as the message
        message_at = match.end()
    message = line[message_at + 1:] if line.startswith(" ", message_at) else line[message_at:]
    if message.startswith("\ufeff"):  # RFC 5424 marks a UTF-8 MSG with a BOM
        message = message[1:]
    iso = ISO.match(stamp)
    ts = iso_ts(*iso.groups()) if iso is not None and iso.end() == len(stamp) else None  # "-": no time
    return _line(ts, _level_from_pri(pri, message), message, fields, "syslog")


def _parse_syslog_pri(line: str, year: int | None) -> ParsedLine | None:
    parsed = _parse_rfc5424(line)
    if parsed is None:
        close = line.find(">", 1, 5)
        if close > 0:
            after = line[close + 1:close + 2]
            parsed = _parse_syslog_iso(line) if "0" <= after <= "9" else _parse_rfc3164(line, year)
    return parsed


# --- JSON ---------------------------------------------------------------------------------------------

_JSON_LEVEL_KEYS = ("level", "lvl", "severity", "log.level")
_JSON_MESSAGE_KEYS = ("msg", "message", "event")
_JSON_TIME_KEYS = ("time", "ts", "timestamp", "@timestamp")
_PINO_LEVELS = ("debug", "debug", "info", "warning", "error", "critical")  # 10 trace .. 60 fatal


def _json_level(value: object) -> str | None:
    if type(value) is str:
        return _LEVEL_NAMES.get(value.strip().lower()) if len(value) <= 16 else None
    if type(value) is int:
        if 0 <= value <= 7:  # a syslog severity
            return _SYSLOG_SEVERITY[value]
        if 10 <= value <= 69:  # pino / bunyan
            return _PINO_LEVELS[value // 10 - 1]
    return None


def _epoch_number(value: float) -> float | None:
    """Epoch seconds, or millis / micros / nanos told apart by magnitude (1e11 s is in the year 5138)."""
    if not math.isfinite(value):
        return None
    magnitude = abs(value)
    if magnitude >= 1e17:
        return value / 1e9
    if magnitude >= 1e14:
        return value / 1e6
    if magnitude >= 1e11:
        return value / 1e3
    return float(value)


def _json_ts(value: object) -> float | None:
    if type(value) is str:
        match = ISO.match(value)
        if match is not None and match.end() == len(value):
            return iso_ts(*match.groups())
        return _epoch_number(float(value)) if _NUMBER.match(value) else None
    if type(value) is int or type(value) is float:
        return _epoch_number(value)
    return None


def _json_field(value: object) -> FieldValue | None:
    """A field value as stored: scalars kept, booleans as text, nesting as compact JSON, null dropped."""
    if type(value) is str:  # exact types: orjson makes no subclasses, and a bool must not pass as an int
        return value if len(value) <= _SAFE_CHARS else _cap(value)
    if type(value) is int or type(value) is float:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if value is None:
        return None
    try:
        return _cap(orjson.dumps(value).decode())
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: the stored raw line keeps it
        return None


def _first_understood(obj: dict[str, Any], keys: tuple[str, ...],
                      read: Callable[[Any], T | None]) -> tuple[str | None, T | None]:
    for key in keys:
        if key in obj:
            value = read(obj[key])
            if value is not None:
                return key, value
    return None, None


def _json_fields(obj: dict[str, Any], used: tuple[str | None, ...]) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {}
    for key, value in obj.items():
        if key in used:
            continue
        kind = type(value)
        if kind is int or kind is float or (kind is str and len(value) <= _SAFE_CHARS):  # the usual: as is
            fields[key] = value
        elif (field := _json_field(value)) is not None:
            fields[key] = field
        else:
            continue
        if len(fields) == MAX_FIELDS:
            break
    return fields


def _parse_json(line: str) -> ParsedLine | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    level_key, level = _first_understood(obj, _JSON_LEVEL_KEYS, _json_level)
    if level is None and type(log := obj.get("log")) is dict:  # ECS may nest it: {"log": {"level": ...}}
        level = _json_level(log.get("level"))
    ts_key, ts = _first_understood(obj, _JSON_TIME_KEYS, _json_ts)
    message_key, message = _first_understood(obj, _JSON_MESSAGE_KEYS, _json_field)
    text = line if message is None else str(message)
    fields = _json_fields(obj, (level_key, ts_key, message_key))
    return _line(ts, level or _level_from_words(text), text, fields, "json")


# --- plain and dispatch -------------------------------------------------------------------------------


def _parse_plain(line: str) -> ParsedLine:
    ts = None
    message = line
    if "0" <= line[:1] <= "9" and (match := ISO.match(line)) is not None:
        ts = iso_ts(*match.groups())
        if ts is not None:  # an impossible date is no timestamp: it stays in the message
            message = line[match.end():].lstrip()
    return _line(ts, _level_from_words(message), message, {}, "plain")


def _parse_structured(line: str, year: int | None) -> ParsedLine | None:
    """The format the first characters point at, or None for plain; at most three regexes are tried."""
    first = line[:1]
    if "0" <= first <= "9":  # the busiest branch first
        separator = line[4:5]
        if separator == "/":
            return _parse_nginx_error(line)
        if separator == "-":
            return _parse_syslog_iso(line)
        return _parse_nginx_access(line)  # an IPv4 (or digit-led IPv6) remote_addr
    if first == "{":
        return _parse_json(line)
    if first == "<":
        return _parse_syslog_pri(line, year)
    if line[:3] in MONTHS:
        return _parse_rfc3164(line, year)
    return _parse_nginx_access(line) if first else None  # an IPv6 or host-name remote_addr


def parse_line(line: str, source: str = "", *, year: int | None = None) -> ParsedLine:
    """Parse one log line; never raises.

    ``source``, the file the line came from, is accepted as a hint but not used: every format here is
    recognisable from its content, and a misnamed file must not mislabel its lines. ``year``, when
    given, is used as is for RFC 3164 timestamps (no rollover guess).
    """
    try:
        last = line[-1:]
        if last == "\n" or last == "\r":
            line = line.rstrip("\r\n")
        parsed = _parse_structured(line, year)
        return _parse_plain(line) if parsed is None else parsed
    except Exception:  # a parser bug must cost this line its structure, never the ingestion batch
        return _line(None, "info", line if isinstance(line, str) else "", {}, "plain")
