"""Domain errors: raised by domain code, turned into HTTP responses by ``hostatlas.http.errors`` alone."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldProblem:
    field: str
    code: str
    message: str


@dataclass
class DomainError(Exception):
    message: str
    code: str = "error"
    fields: list[FieldProblem] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


class NotFound(DomainError):
    def __init__(self, resource: str, code: str = "not_found") -> None:
        super().__init__(f"{resource} not found", code)


class Conflict(DomainError):
    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(message, code)


class MalformedBody(DomainError):
    """A body that cannot be read at all (not JSON): nothing in it can be judged field by field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


class InvalidInput(DomainError):
    """Input that is well-formed but breaks a rule; names the offending fields."""

    def __init__(self, problems: list[FieldProblem], message: str = "The request has invalid fields") -> None:
        super().__init__(message, "validation_failed", problems)

    @classmethod
    def single(cls, field_name: str, code: str, message: str) -> InvalidInput:
        return cls([FieldProblem(field_name, code, message)], message)


class PlanLimitReached(DomainError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "plan_limit_reached")


class Unauthenticated(DomainError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


class PermissionDenied(DomainError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


class Unavailable(DomainError):
    """A temporary condition: the client should retry after ``retry_after`` seconds."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after
