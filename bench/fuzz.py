"""A longer Schemathesis run over the whole OpenAPI document, against a real `hostatlas serve`.

    uv run python bench/fuzz.py                                     # both backends, defaults below
    uv run python bench/fuzz.py --backends postgres --examples 300 --max-time 900 --seed 7

tests/test_openapi_fuzz.py runs the same checks with a small budget on every test run; this one digs
deeper. For each backend: a fresh `hostatlas serve` (bench/_harness.py), then Schemathesis's engine with
its examples, coverage and fuzzing phases over every operation: --examples generated cases per
operation, the whole run bounded by --max-time seconds. Requests carry a `*` API key, or an agent
token on agent operations; both are minted again whenever an answer is 401, since a case may delete or
rotate the very key it ran with. Checks: no 5xx, and status code, content type and body as documented.

Prints, per backend: operations, cases, answers by status class, failures by check, and each distinct
failure (operation, check, status) with a curl line that reproduces it. Exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from hostatlas.apikeys import service as api_keys
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG

from _harness import Target, serve

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")
MAX_EXAMPLES, MAX_SECONDS = 2000, 3600
AGENT = {"machine_id": "fuzz-agent", "hostname": "fuzz", "ip_address": "10.9.0.9", "os": "Debian 12",
         "kernel": "6.1.0", "cpu_cores": 2, "ram_total_mb": 2048, "agent_version": "1.0.0"}


@dataclass
class Figures:
    backend: str
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    # (operation, check, status) -> a curl line reproducing it
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    stop_reason: str = ""

    def note(self, event: events.EngineEvent) -> None:
        if isinstance(event, events.ScenarioFinished):
            self._note_scenario(event)
        elif isinstance(event, events.NonFatalError):
            self.errors[f"{event.label}: {type(event.value).__name__}"] += 1
        elif isinstance(event, events.EngineFinished):
            self.seconds, self.stop_reason = event.running_time, event.stop_reason.value

    def _note_scenario(self, event: events.ScenarioFinished) -> None:
        recorder = event.recorder
        self.operations.add(recorder.label)
        self.cases += len(recorder.cases)
        for interaction in recorder.interactions.values():
            answer = interaction.response
            self.answers["no answer" if answer is None else f"{answer.status_code // 100}xx"] += 1
        for case_id, checks in recorder.checks.items():
            response = recorder.interactions.get(case_id)
            status = str(response.response.status_code) if response and response.response else "-"
            for check in checks:
                if check.status == Status.FAILURE and check.failure_info is not None:
                    self.failures.setdefault((recorder.label, check.name, status), check.failure_info.code_sample)

    def report(self) -> None:
        by_check = Counter(check for _, check, _ in self.failures)
        print(f"[{self.backend}] {len(self.operations)} operations, {self.cases} cases in {self.seconds:.0f} s "
              f"({self.stop_reason})")
        print(f"  answers: {', '.join(f'{kind} {count}' for kind, count in sorted(self.answers.items()))}")
        print(f"  distinct failures: {len(self.failures)}"
              + "".join(f"; {check} {count}" for check, count in by_check.most_common()))
        # One line per operation and status: a 500 fails not_a_server_error and status_code_conformance.
        grouped: dict[tuple[str, str], list[str]] = {}
        for (operation, check, status), sample in sorted(self.failures.items()):
            grouped.setdefault((operation, status), [sample]).append(check)
        for (operation, status), (sample, *checks) in grouped.items():
            print(f"    [{status}] {operation}  ({', '.join(checks)})\n      {_one_line(sample)}")
        for error, count in self.errors.most_common():
            print(f"  error x{count}: {error}")


def _one_line(sample: str) -> str:
    return " ".join(line.strip() for line in sample.splitlines() if line.strip())


def config(args: argparse.Namespace) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": args.seed,
        "max-time": args.max_time,
        "suppress-health-check": ["all"],
        "generation": {"mode": "all", "max-examples": args.examples, "deterministic": True, "database": "none",
                       "no-shrink": True},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    })


def credentials_provider(target: Target) -> type:
    """An auth provider class (Schemathesis builds it without arguments) minting credentials for ``target``."""
    db = Database(target.database_url)

    class FreshCredentials:
        def get(self, case: Case, context: Any) -> tuple[str, str]:
            with db.session(write=True) as session:
                team = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG).id
                key = api_keys.create_key(session, team_id=team, name="fuzz", scopes=["*"], expires_at=None,
                                          now=utcnow(), granted_by=["*"]).raw
            answer = httpx.post(f"{target.base_url}/api/v1/agent/register", json=AGENT,
                                headers={"Authorization": f"Bearer {key}"}, trust_env=False)
            answer.raise_for_status()
            return key, str(answer.json()["agent_token"])

        def set(self, case: Case, data: tuple[str, str], context: Any) -> None:
            key, token = data
            schemes = {name for requirement in case.operation.definition.raw.get("security", [])
                       for name in requirement}
            bearer = token if schemes == {"AgentToken"} else key
            case.headers["Authorization"] = f"Bearer {bearer}"

    return FreshCredentials


def run(backend: str, args: argparse.Namespace) -> Figures:
    figures = Figures(backend)
    with serve(backend, serve_args=("--no-worker",)) as target:
        schema = schemathesis.openapi.from_url(f"{target.base_url}/api/v1/openapi.json", config=config(args))
        schema.auth(refresh_interval=args.max_time)(credentials_provider(target))
        for event in schemathesis.engine.from_schema(schema).execute():
            figures.note(event)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--examples", type=int, default=100, help=f"generated cases per operation (≤ {MAX_EXAMPLES})")
    parser.add_argument("--max-time", type=int, default=600, help=f"seconds per backend (≤ {MAX_SECONDS})")
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args()
    args.examples = max(1, min(args.examples, MAX_EXAMPLES))
    args.max_time = max(10, min(args.max_time, MAX_SECONDS))
    failed = False
    for backend in args.backends.split(","):
        figures = run(backend.strip(), args)
        figures.report()
        failed = failed or bool(figures.failures)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
