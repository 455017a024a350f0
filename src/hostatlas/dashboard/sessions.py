"""Sign-in sessions and CSRF tokens, both in signed cookies: nothing is stored server-side per session.

- The session cookie holds ``{user id, team id, issued at}``, signed (itsdangerous, HMAC-SHA256 under a key
  derived from the platform key) and time-limited (``session_max_age``). ``HttpOnly`` (no script reads it),
  ``SameSite=Lax`` (no cross-site POST carries it), ``Secure`` when the public URL is https. "Log out everywhere"
  moves the user's ``sessions_valid_after`` past every issued-at, which no cookie can forge.
- CSRF: a random value in its own cookie (set before sign-in too, so the sign-in form is covered); forms carry
  an HMAC of it (``csrf_token``), htmx sends the same as ``X-CSRF-Token``. Another site can make a browser send
  the cookie but cannot read it to compute the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "hostatlas_session"
CSRF_COOKIE = "hostatlas_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class SessionData:
    user_id: int
    team_id: int
    issued_at: float  # unix seconds: compared with the user's sessions_valid_after


class SessionCodec:
    def __init__(self, keys: list[bytes], *, max_age: int) -> None:
        # itsdangerous signs with the last key and accepts any: the platform's first key must sign.
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt="hostatlas.dashboard.session")
        self._csrf_key = keys[0]
        self.max_age = max_age

    def encode(self, data: SessionData) -> str:
        return self._serializer.dumps([data.user_id, data.team_id, data.issued_at])

    def decode(self, cookie: str | None) -> SessionData | None:
        """The session a cookie holds, or None when it is absent, forged, malformed or expired."""
        if not cookie or len(cookie) > 1024:
            return None
        try:
            value = self._serializer.loads(cookie, max_age=self.max_age)
        except (BadSignature, ValueError):
            return None
        if (not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, int) for v in value[:2])
                or not isinstance(value[2], int | float)):
            return None
        return SessionData(user_id=value[0], team_id=value[1], issued_at=float(value[2]))

    def csrf_token(self, csrf_cookie: str) -> str:
        return hmac.new(self._csrf_key, f"csrf:{csrf_cookie}".encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, csrf_cookie: str | None, token: str | None) -> bool:
        if not csrf_cookie or not token:
            return False
        return hmac.compare_digest(self.csrf_token(csrf_cookie), token)


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(24)
