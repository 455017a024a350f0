"""Log line parsing: every format, its fields, levels and exact timestamps, and lines that must not break it."""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine

from hostatlas.telemetry.ingest import logparse
from hostatlas.telemetry.ingest.logparse import MAX_FIELDS, MAX_TEXT_BYTES, ParsedLine, parse_line
from hostatlas.telemetry.storage.contract import LEVELS

T0 = 1774103521.0  # 2026-03-21T14:32:01Z
FORMATS = {"nginx_access", "nginx_error", "syslog", "json", "plain"}


def _valid(parsed: ParsedLine) -> None:
    assert parsed.level in LEVELS
    assert parsed.format in FORMATS
    assert parsed.ts is None or math.isfinite(parsed.ts)
    assert len(parsed.message.encode("utf-8", "surrogatepass")) <= MAX_TEXT_BYTES
    assert len(parsed.fields) <= MAX_FIELDS
    assert all(type(value) in (str, int, float) for value in parsed.fields.values())


# --- nginx access -------------------------------------------------------------------------------------

COMBINED = '10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "GET /api/v1/servers HTTP/1.1" 200 512 "-" "curl/8.0"'


def test_nginx_access_combined() -> None:
    assert parse_line(COMBINED) == ParsedLine(
        ts=T0, level="info", message="GET /api/v1/servers 200",
        fields={"remote_addr": "10.0.1.5", "method": "GET", "path": "/api/v1/servers", "protocol": "HTTP/1.1",
                "status": 200, "bytes": 512, "user_agent": "curl/8.0"},
        format="nginx_access")


@pytest.mark.parametrize(("line", "expected"), [
    # common format: no referer, no user agent
    ('127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326',
     {"remote_addr": "127.0.0.1", "remote_user": "frank", "method": "GET", "path": "/apache_pb.gif",
      "protocol": "HTTP/1.0", "status": 200, "bytes": 2326}),
    # a referer, and $request_time at the end of a custom log_format
    ('10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "POST /login HTTP/2.0" 302 0 "https://app.example.com/" '
     '"Mozilla/5.0 (X11)" 0.125',
     {"remote_addr": "10.0.1.5", "method": "POST", "path": "/login", "protocol": "HTTP/2.0", "status": 302,
      "bytes": 0, "referer": "https://app.example.com/", "user_agent": "Mozilla/5.0 (X11)", "request_time": 0.125}),
    # more custom fields ($http_x_forwarded_for) before $request_time
    ('10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "GET / HTTP/1.1" 200 9 "-" "curl/8.0" "203.0.113.9" 3',
     {"remote_addr": "10.0.1.5", "method": "GET", "path": "/", "protocol": "HTTP/1.1", "status": 200, "bytes": 9,
      "user_agent": "curl/8.0", "request_time": 3.0}),
    # custom fields not ending in a number: no request_time
    ('10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "GET / HTTP/1.1" 200 9 "-" "curl/8.0" "203.0.113.9"',
     {"remote_addr": "10.0.1.5", "method": "GET", "path": "/", "protocol": "HTTP/1.1", "status": 200, "bytes": 9,
      "user_agent": "curl/8.0"}),
    # IPv6 and host-name remote addresses
    ('::1 - - [21/Mar/2026:14:32:01 +0000] "GET /healthz HTTP/1.1" 204 0 "-" "kube-probe/1.29"',
     {"remote_addr": "::1", "method": "GET", "path": "/healthz", "protocol": "HTTP/1.1", "status": 204, "bytes": 0,
      "user_agent": "kube-probe/1.29"}),
    ('2001:db8::7 - - [21/Mar/2026:14:32:01 +0000] "GET / HTTP/1.1" 200 1 "-" "-"',
     {"remote_addr": "2001:db8::7", "method": "GET", "path": "/", "protocol": "HTTP/1.1", "status": 200, "bytes": 1}),
    ('lb.internal - - [21/Mar/2026:14:32:01 +0000] "GET / HTTP/1.1" 200 1',
     {"remote_addr": "lb.internal", "method": "GET", "path": "/", "protocol": "HTTP/1.1", "status": 200, "bytes": 1}),
])
def test_nginx_access_fields(line: str, expected: dict[str, Any]) -> None:
    parsed = parse_line(line)
    assert parsed.format == "nginx_access"
    assert parsed.fields == expected


@pytest.mark.parametrize(("status", "level"), [
    (100, "info"), (200, "info"), (204, "info"), (301, "info"), (304, "info"),
    (400, "warning"), (404, "warning"), (499, "warning"), (500, "error"), (502, "error"), (504, "error"),
])
def test_nginx_access_level_from_status(status: int, level: str) -> None:
    parsed = parse_line(COMBINED.replace('" 200 ', f'" {status} '))
    assert (parsed.level, parsed.fields["status"], parsed.message) == (level, status, f"GET /api/v1/servers {status}")


@pytest.mark.parametrize(("stamp", "ts"), [
    ("21/Mar/2026:14:32:01 +0000", T0),
    ("21/Mar/2026:15:32:01 +0100", T0),
    ("21/Mar/2026:09:02:01 -0530", T0),
    ("10/Oct/2000:13:55:36 -0700", 971211336.0),
    ("29/Feb/2024:12:00:00 +0000", 1709208000.0),
    ("30/Feb/2026:12:00:00 +0000", None),  # no such day: the line is still an access line
    ("21/Foo/2026:14:32:01 +0000", None),
    ("garbage", None),
])
def test_nginx_access_timestamps(stamp: str, ts: float | None) -> None:
    parsed = parse_line(COMBINED.replace("21/Mar/2026:14:32:01 +0000", stamp))
    assert (parsed.format, parsed.ts) == ("nginx_access", ts)


def test_nginx_access_unusual_request_lines_keep_the_request_as_message() -> None:
    junk = parse_line('10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "\\x16\\x03\\x01" 400 157 "-" "-"')
    assert (junk.message, junk.level) == ("\\x16\\x03\\x01 400", "warning")
    assert "method" not in junk.fields and junk.fields["status"] == 400
    dash = parse_line('10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "-" 408 0 "-" "-"')
    assert dash.message == "- 408"
    no_bytes = parse_line('10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "GET / HTTP/1.1" 304 -')
    assert "bytes" not in no_bytes.fields and no_bytes.format == "nginx_access"


@pytest.mark.parametrize("line", [
    '10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "GET / HTTP/1.1" 200 512abc',
    '10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "GET / HTTP/1.1" 2000 512',
    '10.0.1.5 - - 21/Mar/2026:14:32:01 +0000 "GET / HTTP/1.1" 200 512',
    "10.0.1.5 connected",
])
def test_almost_access_lines_are_plain(line: str) -> None:
    assert parse_line(line).format == "plain"


# --- nginx error --------------------------------------------------------------------------------------

NGINX_ERROR = ('2026/03/21 14:28:41 [error] 812#812: *1 connect() failed (111: Connection refused) while connecting '
               'to upstream, client: 10.0.1.5, server: app.example.com, request: "GET / HTTP/1.1", '
               'upstream: "http://127.0.0.1:8080/", host: "app.example.com"')


def test_nginx_error_with_request_context() -> None:
    assert parse_line(NGINX_ERROR, "/var/log/nginx/error.log") == ParsedLine(
        ts=1774103321.0, level="error",
        message="connect() failed (111: Connection refused) while connecting to upstream",
        fields={"pid": 812, "tid": 812, "connection_id": 1, "client": "10.0.1.5", "server": "app.example.com",
                "request": "GET / HTTP/1.1", "upstream": "http://127.0.0.1:8080/", "host": "app.example.com"},
        format="nginx_error")


def test_nginx_error_without_connection_or_pairs() -> None:
    message = "bind() to 0.0.0.0:80 failed (98: Address already in use)"
    assert parse_line(f"2026/03/21 14:28:41 [emerg] 1#1: {message}") == ParsedLine(
        ts=1774103321.0, level="critical", message=message, fields={"pid": 1, "tid": 1}, format="nginx_error")


def test_nginx_error_pairs_with_commas_in_quoted_values() -> None:
    parsed = parse_line('2026/03/21 14:28:41 [warn] 9#9: *77 an upstream response is buffered, client: 10.0.0.1, '
                        'server: _, request: "GET /a,b HTTP/1.1", referrer: "https://x/?q=1,2"')
    assert parsed.message == "an upstream response is buffered"
    assert parsed.fields == {"pid": 9, "tid": 9, "connection_id": 77, "client": "10.0.0.1", "server": "_",
                             "request": "GET /a,b HTTP/1.1", "referrer": "https://x/?q=1,2"}


@pytest.mark.parametrize(("word", "level"), [
    ("emerg", "critical"), ("alert", "critical"), ("crit", "critical"), ("error", "error"), ("warn", "warning"),
    ("notice", "notice"), ("info", "info"), ("debug", "debug"),
    ("bogus", "info"),  # not a level nginx writes: words in the message decide, "info" by default
])
def test_nginx_error_levels(word: str, level: str) -> None:
    parsed = parse_line(f"2026/03/21 14:28:41 [{word}] 1#1: signal process started")
    assert (parsed.format, parsed.level) == ("nginx_error", level)


# --- syslog -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ("Mar 21 14:32:01 web-prod-01 sshd[1234]: Accepted publickey for deploy",
     ParsedLine(T0, "info", "Accepted publickey for deploy", {"host": "web-prod-01", "app": "sshd", "pid": 1234},
                "syslog")),
    ("Mar  1 14:32:01 web-prod-01 kernel: [12.5] eth0: link up",
     ParsedLine(1772375521.0, "info", "[12.5] eth0: link up", {"host": "web-prod-01", "app": "kernel"}, "syslog")),
    ("Mar 21 14:32:01 web-prod-01 CRON[77]: error: (root) MAIL (mailer exited)",
     ParsedLine(T0, "error", "error: (root) MAIL (mailer exited)", {"host": "web-prod-01", "app": "CRON", "pid": 77},
                "syslog")),
    ("Mar 21 14:32:01 web-prod-01 -- MARK --",
     ParsedLine(T0, "info", "-- MARK --", {"host": "web-prod-01"}, "syslog")),
    ("<11>Mar 21 14:32:01 web-prod-01 app[5]: something happened",
     ParsedLine(T0, "error", "something happened", {"host": "web-prod-01", "app": "app", "pid": 5}, "syslog")),
    ("Mar 21 14:32:01 sshd[7]: error: no hostname in this one",  # BSD-style local logs leave the host out
     ParsedLine(T0, "error", "error: no hostname in this one", {"app": "sshd", "pid": 7}, "syslog")),
    ("Mar 21 14:32:01 kernel: x", ParsedLine(T0, "info", "x", {"app": "kernel"}, "syslog")),
    ("Mar 21 14:32:01 web-prod-01 systemd-logind[612]: ",
     ParsedLine(T0, "info", "", {"host": "web-prod-01", "app": "systemd-logind", "pid": 612}, "syslog")),
])
def test_rfc3164(line: str, expected: ParsedLine) -> None:
    assert parse_line(line, year=2026) == expected


@pytest.mark.parametrize(("now", "line", "ts"), [
    # a December line read just after new year belongs to the year that ended
    ("2026-01-01T00:10:00Z", "Dec 31 23:59:00 h app: x", 1767225540.0),
    ("2026-01-01T00:10:00Z", "Jan  1 00:05:00 h app: x", 1767225900.0),
    # up to a day ahead is clock skew, not last year
    ("2026-03-21T14:00:00Z", "Mar 22 00:00:00 h app: x", 1774137600.0),
    # more than a day ahead: last year's line
    ("2026-03-21T14:00:00Z", "Mar 23 08:00:00 h app: x", 1742716800.0),
    # Feb 29 does not exist this year: the last leap year's (2028 is read in 2029)
    ("2029-01-15T00:00:00Z", "Feb 29 12:00:00 h app: x", 1835438400.0),
])
def test_rfc3164_year_rollover(now: str, line: str, ts: float) -> None:
    with time_machine.travel(datetime.fromisoformat(now), tick=False):
        assert parse_line(line).ts == ts


def test_rfc3164_explicit_year_is_used_as_given() -> None:
    with time_machine.travel(datetime(2026, 1, 1, 0, 10, tzinfo=UTC), tick=False):
        assert parse_line("Dec 31 23:59:00 h app: x", year=2026).ts == 1798761540.0
    assert parse_line("Feb 29 12:00:00 h app: x", year=2024).ts == 1709208000.0
    assert parse_line("Feb 29 12:00:00 h app: x", year=2026).ts is None


def test_rfc3164_default_year_follows_the_clock_across_calls() -> None:
    line = "Jun  1 00:00:00 h app: x"
    with time_machine.travel(datetime(2026, 7, 1, tzinfo=UTC), tick=False):
        assert parse_line(line).ts == datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    with time_machine.travel(datetime(2027, 7, 1, tzinfo=UTC), tick=False):
        assert parse_line(line).ts == datetime(2027, 6, 1, tzinfo=UTC).timestamp()


def test_rfc5424() -> None:
    assert parse_line("<34>1 2026-03-21T14:32:01.003Z web-prod-01 app 1234 ID47 - message") == ParsedLine(
        ts=pytest.approx(T0 + 0.003, abs=1e-6), level="critical", message="message",  # type: ignore[arg-type]
        fields={"host": "web-prod-01", "app": "app", "pid": 1234, "msgid": "ID47"}, format="syslog")


def test_rfc5424_structured_data_bom_and_zone() -> None:
    parsed = parse_line('<165>1 2003-10-11T22:14:15.5-07:00 mymachine.example.com evntslog - ID47 '
                        '[exampleSDID@32473 iut="3" eventSource="Application"][meta q="a\\"b\\]c\\\\d"] '
                        '\ufeffAn application event')
    assert parsed.ts == 1065910455.5 + 7 * 3600
    assert (parsed.level, parsed.message) == ("notice", "An application event")
    assert parsed.fields == {"host": "mymachine.example.com", "app": "evntslog", "msgid": "ID47",
                             "exampleSDID@32473.iut": "3", "exampleSDID@32473.eventSource": "Application",
                             "meta.q": 'a"b]c\\d'}


@pytest.mark.parametrize(("line", "expected"), [
    ("<14>1 - - - - - -", ParsedLine(None, "info", "", {}, "syslog")),
    ("<14>1 - host - - - - hello", ParsedLine(None, "info", "hello", {"host": "host"}, "syslog")),
    ("<14>1 2026-03-21T14:32:01Z h app worker-3 - - hi",
     ParsedLine(T0, "info", "hi", {"host": "h", "app": "app", "pid": "worker-3"}, "syslog")),
    ("<14>1 2026-03-21T14:32:01Z h app 1 - [unterminated x=\"1\" hi",
     ParsedLine(T0, "info", '[unterminated x="1" hi', {"host": "h", "app": "app", "pid": 1}, "syslog")),
    ("<14>1 not-a-time h app 1 - - hi",
     ParsedLine(None, "info", "hi", {"host": "h", "app": "app", "pid": 1}, "syslog")),
])
def test_rfc5424_nil_values_and_oddities(line: str, expected: ParsedLine) -> None:
    assert parse_line(line) == expected


@pytest.mark.parametrize(("pri", "level"), [
    (0, "critical"), (1, "critical"), (2, "critical"), (3, "error"), (4, "warning"), (5, "notice"), (6, "info"),
    (7, "debug"), (14, "info"), (34, "critical"), (191, "debug"),
    (192, "error"),  # not a valid PRI: the message's level word decides
])
def test_syslog_pri_severity(pri: int, level: str) -> None:
    assert parse_line(f"<{pri}>1 2026-03-21T14:32:01Z h app 1 - - error: x").level == level
    assert parse_line(f"<{pri}>Mar 21 14:32:01 h app: error: x", year=2026).level == level


@pytest.mark.parametrize(("line", "expected"), [
    ("2026-03-21T14:32:01.123456+00:00 web-prod-01 nginx[812]: 10.0.0.1 upstream timed out",
     ParsedLine(pytest.approx(T0 + 0.123456, abs=1e-6), "info", "10.0.0.1 upstream timed out",  # type: ignore[arg-type]
                {"host": "web-prod-01", "app": "nginx", "pid": 812}, "syslog")),
    ("2026-03-21T16:32:01+02:00 web-prod-01 sudo: WARNING: deploy : TTY=pts/0",
     ParsedLine(T0, "warning", "WARNING: deploy : TTY=pts/0", {"host": "web-prod-01", "app": "sudo"}, "syslog")),
    ("<30>2026-03-21T14:32:01Z web-prod-01 app[1]: started",
     ParsedLine(T0, "info", "started", {"host": "web-prod-01", "app": "app", "pid": 1}, "syslog")),
])
def test_syslog_iso_timestamp(line: str, expected: ParsedLine) -> None:
    assert parse_line(line) == expected


def test_app_lines_with_a_level_where_the_host_would_be_are_plain() -> None:
    parsed = parse_line("2026-03-21T14:32:01Z ERROR db: connection lost")
    assert parsed == ParsedLine(T0, "error", "ERROR db: connection lost", {}, "plain")


# --- JSON ---------------------------------------------------------------------------------------------


def test_json_line() -> None:
    line = ('{"time":"2026-03-21T14:32:01.250Z","level":"WARN","msg":"disk almost full","mount":"/var",'
            '"used_pct":91.5,"inodes":12,"ok":false,"tags":["a","b"],"ctx":{"k":1},"none":null}')
    assert parse_line(line) == ParsedLine(
        ts=T0 + 0.25, level="warning", message="disk almost full",
        fields={"mount": "/var", "used_pct": 91.5, "inodes": 12, "ok": "false", "tags": '["a","b"]', "ctx": '{"k":1}'},
        format="json")


@pytest.mark.parametrize(("value", "level"), [
    ('"debug"', "debug"), ('"TRACE"', "debug"), ('"info"', "info"), ('"Information"', "info"),
    ('"notice"', "notice"), ('"warn"', "warning"), ('"Warning"', "warning"), ('"err"', "error"),
    ('"ERROR"', "error"), ('"fatal"', "critical"), ('"crit"', "critical"), ('"critical"', "critical"),
    ('"alert"', "critical"), ('"emerg"', "critical"), ('"panic"', "critical"), ('" error "', "error"),
    ("3", "error"), ("6", "info"),  # syslog severity numbers
    ("10", "debug"), ("20", "debug"), ("30", "info"), ("40", "warning"), ("50", "error"), ("60", "critical"),  # pino
])
def test_json_level_values(value: str, level: str) -> None:
    for key in ("level", "lvl", "severity", "log.level"):
        assert parse_line(f'{{"{key}":{value},"msg":"x"}}').level == level


@pytest.mark.parametrize(("line", "level", "fields"), [
    ('{"lvl":"error","level":"debug","msg":"x"}', "debug", {"lvl": "error"}),  # level beats lvl
    ('{"severity":"warn","lvl":"error","msg":"x"}', "error", {"severity": "warn"}),
    ('{"level":"verbose","severity":"error","msg":"x"}', "error", {"level": "verbose"}),  # first understood
    ('{"level":"verbose","msg":"x"}', "info", {"level": "verbose"}),
    ('{"log":{"level":"error","logger":"db"},"message":"x"}', "error", {"log": '{"level":"error","logger":"db"}'}),
    ('{"msg":"ERROR: could not connect"}', "error", {}),  # no level key: words in the message
    ('{"msg":"all good"}', "info", {}),
])
def test_json_level_keys(line: str, level: str, fields: dict[str, Any]) -> None:
    parsed = parse_line(line)
    assert (parsed.level, parsed.fields) == (level, fields)


@pytest.mark.parametrize(("line", "message", "fields"), [
    ('{"msg":"a","message":"b","event":"c"}', "a", {"message": "b", "event": "c"}),
    ('{"message":"b","event":"c"}', "b", {"event": "c"}),
    ('{"event":"user.login","user":"ada"}', "user.login", {"user": "ada"}),
    ('{"msg":null,"message":"b"}', "b", {}),
    ('{"msg":42}', "42", {}),
    ('{"user":"ada","n":1}', '{"user":"ada","n":1}', {"user": "ada", "n": 1}),  # no message key: the line
])
def test_json_message_keys(line: str, message: str, fields: dict[str, Any]) -> None:
    parsed = parse_line(line)
    assert (parsed.message, parsed.fields) == (message, fields)


@pytest.mark.parametrize(("value", "ts"), [
    ("1774103521", T0),  # seconds
    ("1774103521.5", T0 + 0.5),
    ("1774103521500", T0 + 0.5),  # millis
    ("1774103521500000", T0 + 0.5),  # micros
    ("1774103521500000000", T0 + 0.5),  # nanos
    ("0", 0.0),
    ('"2026-03-21T14:32:01Z"', T0),
    ('"2026-03-21T14:32:01.5+00:00"', T0 + 0.5),
    ('"2026-03-21T16:32:01+0200"', T0),
    ('"2026-03-21 14:32:01"', T0),  # no zone: UTC
    ('"1774103521"', T0),
    ('"1774103521500"', T0 + 0.5),
])
def test_json_timestamps(value: str, ts: float) -> None:
    for key in ("time", "ts", "timestamp", "@timestamp"):
        parsed = parse_line(f'{{"{key}":{value},"msg":"x"}}')
        assert parsed.ts == pytest.approx(ts, abs=1e-6)
        assert key not in parsed.fields


@pytest.mark.parametrize("value", ['"yesterday"', '"2026-02-30T00:00:00Z"', "true", "null", '{"s":1}', '"12ms"'])
def test_json_unparseable_time_stays_a_field(value: str) -> None:
    parsed = parse_line(f'{{"time":{value},"msg":"x"}}')
    assert parsed.ts is None
    assert ("time" in parsed.fields) == (value != "null")


def test_json_first_understood_time_key_wins() -> None:
    parsed = parse_line('{"time":"12ms","ts":1774103521,"msg":"x"}')
    assert (parsed.ts, parsed.fields) == (T0, {"time": "12ms"})


def test_json_fields_are_capped() -> None:
    line = "{" + ",".join(f'"k{index}":{index}' for index in range(100)) + "}"
    parsed = parse_line(line)
    assert parsed.fields == {f"k{index}": index for index in range(MAX_FIELDS)}


@pytest.mark.parametrize("line", ["{", '{"a":1', "[1,2]", '{"a":1} trailing', "{not json}", '{"a":NaN}'])
def test_not_a_json_object_is_plain(line: str) -> None:
    assert parse_line(line).format == "plain"


# --- plain --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "level"), [
    ("ERROR could not open file", "error"),
    ("err: could not open file", "error"),
    ("[WARN] slow query", "warning"),
    ("Warning: low memory", "warning"),
    ("INFO started", "info"),
    ("level=debug msg=tick", "debug"),
    ("TRACE entering f()", "debug"),
    ("NOTICE: config reloaded", "notice"),
    ("CRITICAL: out of memory", "critical"),
    ("crit: disk failure", "critical"),
    ("FATAL: database system is shut down", "critical"),
    ("panic: runtime error: index out of range", "critical"),
    ("EMERG kernel", "critical"),
    ("alert: raid degraded", "critical"),
    ("[main] INFO c.e.App - error count is 0", "info"),  # the leftmost level word wins
    ("no errors found", "info"),  # whole words only
    ("ERROR_CODE=7 returned", "info"),
    ("terror struck", "info"),
    ("just a line", "info"),
    ("x" * 100 + " ERROR", "info"),  # too far into the line to be its level
    ("été 🚀 ERROR ünïcode", "error"),
])
def test_plain_level_words(line: str, level: str) -> None:
    parsed = parse_line(line)
    assert (parsed.format, parsed.level, parsed.ts, parsed.message, parsed.fields) == ("plain", level, None, line, {})


@pytest.mark.parametrize(("line", "ts", "message"), [
    ("2026-03-21T14:32:01Z worker started", T0, "worker started"),
    ("2026-03-21 14:32:01,250 INFO app: hello", T0 + 0.25, "INFO app: hello"),
    ("2026-03-21T14:32:01.000001 tick", T0 + 0.000001, "tick"),
    ("2026-03-21T16:02:01+01:30 x", T0, "x"),
    ("2026-02-30T14:32:01Z impossible date", None, "2026-02-30T14:32:01Z impossible date"),
    ("2026-03-21 not a time", None, "2026-03-21 not a time"),
])
def test_plain_leading_iso_timestamp(line: str, ts: float | None, message: str) -> None:
    parsed = parse_line(line)
    assert parsed.format == "plain"
    assert parsed.ts == (None if ts is None else pytest.approx(ts, abs=1e-6))
    assert parsed.message == message


# --- robustness ---------------------------------------------------------------------------------------


def test_line_endings_are_not_part_of_the_line() -> None:
    assert parse_line(COMBINED + "\r\n") == parse_line(COMBINED)
    assert parse_line("ERROR x\n") == ParsedLine(None, "error", "ERROR x", {}, "plain")


def test_source_is_only_a_hint() -> None:
    assert parse_line(COMBINED, "/var/log/nginx/error.log") == parse_line(COMBINED)
    assert parse_line(NGINX_ERROR, "/var/log/syslog") == parse_line(NGINX_ERROR, "/var/log/nginx/error.log")


@pytest.mark.parametrize("line", [
    "", " ", "\n", "\r\n", "\t", "\x00", "{", "}", "<", "<>", "<999>", "<1>", "<1>1", "<1>1 ", "[", "]", '"', "-",
    "0", "2026", "2026/", "2026-", "2026/03/21 14:28:41 [", "Mar", "Mar ", "Mar 21 14:32:01", "Mar 21 14:32:01 ",
    "\ud800", "a\udfffb", "\ufeff", "🚀" * 10, "\u202e\u0645\u0631\u062d\u0628\u0627", "İİİ ERROR", "\u212aERROR",
    '{"msg":"\\ud800"}', '{"a":' * 100 + "1" + "}" * 100, '{"a":' * 300 + "1" + "}" * 300,
    '{"n":123456789012345678901234567890}', '{"time":1e400}', '{"time":-1e300,"msg":"x"}',
    "1.2.3.4 - - [99/Zzz/0000:99:99:99 +9999] \"GET / HTTP/1.1\" 999 99999999999999999999",
    "<0>1 0000-00-00T00:00:00Z - - 99999999999999999999999999999 - - x",
    "<7>Feb 30 99:99:99 h app[1]: x",
    "0000-01-01T00:00:00Z h a: x", "9999-12-31T23:59:60.999999999999+23:59 h a[1]: x",
])
def test_odd_lines_never_raise(line: str) -> None:
    _valid(parse_line(line))


def test_huge_lines_are_cut_and_stay_linear() -> None:
    size = 1_000_000
    templates = [
        "x" * size, " " * size, "[" * size, '"' * size, "{" * size, "<" * size, "1" * size, ":" * size,
        "a: " * (size // 3), ", client: " * (size // 10), "1.1.1.1 " * (size // 8), '1.1.1.1 - - [' + "x" * size,
        '1.1.1.1 - - [21/Mar/2026:14:32:01 +0000] "' + "a " * (size // 2),
        COMBINED + " 1" * (size // 2), NGINX_ERROR + ", a: b" * (size // 6), NGINX_ERROR + ', a: "' * (size // 6),
        "Mar 21 14:32:01 h " + "a" * size, "<1>1 - - - - - " + '[a b="' * (size // 6),
        "<1>1 - - - - - [a" + ' b="\\\\"' * (size // 8), '{"msg":"' + "é" * size + '"}',
        "2026-03-21T14:32:01." + "9" * size, '{"time":"' + "1" * size + '"}',
    ]
    for line in templates:
        started = time.perf_counter()
        parsed = parse_line(line)
        assert time.perf_counter() - started < 2.0, line[:40]
        _valid(parsed)


def test_message_is_cut_to_8_kib_at_a_character_boundary() -> None:
    ascii_line = parse_line("ERROR " + "a" * 20_000)
    assert len(ascii_line.message) == MAX_TEXT_BYTES and ascii_line.level == "error"
    for char in ("é", "€", "🚀"):  # 2, 3 and 4 bytes: 8192 is not a multiple of 3
        message = parse_line(char * 5000).message
        assert set(message) == {char}
        assert MAX_TEXT_BYTES - len(char.encode()) < len(message.encode()) <= MAX_TEXT_BYTES
    short = "é" * 3000  # over 2048 characters but under 8 KiB: kept whole
    assert parse_line(short).message == short


def test_field_values_are_cut_too() -> None:
    parsed = parse_line('{"msg":"x","blob":"' + "b" * 20_000 + '","list":[' + ",".join(["1"] * 10_000) + "]}")
    assert len(parsed.fields["blob"]) == MAX_TEXT_BYTES  # type: ignore[arg-type]
    assert len(parsed.fields["list"]) == MAX_TEXT_BYTES  # type: ignore[arg-type]


def test_a_parser_bug_costs_structure_not_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(line: str) -> ParsedLine:
        raise RuntimeError("bug")

    monkeypatch.setattr(logparse, "_parse_nginx_access", broken)
    assert parse_line(COMBINED) == ParsedLine(None, "info", COMBINED, {}, "plain")


REAL_LINES = [
    COMBINED, NGINX_ERROR, "Mar 21 14:32:01 web-prod-01 sshd[1234]: Accepted publickey for deploy",
    "<34>1 2026-03-21T14:32:01.003Z web-prod-01 app 1234 ID47 [a b=\"c\"] message",
    "2026-03-21T14:32:01.123456+00:00 web-prod-01 nginx[812]: warn x",
    '{"level":"info","msg":"hi","time":1774103521123,"a":[1,{"b":2}]}', "2026-03-21 14:32:01,123 ERROR x",
]
HOSTILE = ' \t[]{}<>"\'\\:,-=./*#0123456789TZ+aeErRwWiInNfF\x00\n\r\u00e9\u20ac\U0001f680\ud800'


def _random_line(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:  # noise from a hostile alphabet, sometimes in long runs
        return "".join(rng.choice(HOSTILE) * (rng.randrange(200) if rng.random() < 0.1 else 1)
                       for _ in range(rng.randrange(120)))
    base = rng.choice(REAL_LINES)
    if roll < 0.6:  # a real line cut short
        return base[:rng.randrange(len(base) + 1)]
    chars = list(base)  # a real line with a few characters replaced, inserted or deleted
    for _ in range(rng.randrange(1, 6)):
        position = rng.randrange(len(chars) + 1)
        action = rng.randrange(3)
        if action == 0 and position < len(chars):
            chars[position] = rng.choice(HOSTILE)
        elif action == 1:
            chars.insert(position, rng.choice(HOSTILE) * rng.randrange(1, 50))
        elif position < len(chars):
            del chars[position]
    return "".join(chars)


def test_random_lines_never_raise() -> None:
    rng = random.Random(20260321)
    formats: set[str] = set()
    for _ in range(5000):
        line = _random_line(rng)
        parsed = parse_line(line)
        _valid(parsed)
        formats.add(parsed.format)
    assert formats == FORMATS  # the mutations reached every parser, not just the plain fallback
