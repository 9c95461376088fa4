"""Expiring result links.

A finished task's ``result_url`` can be handed to a browser, a player or another service: it works
without the API key until it expires (``ECHOMIMIC_RESULT_URL_TTL`` seconds after the status was
read).

* With S3 storage it is a presigned URL of the object: the download goes straight to the store.
* With local storage it is ``/api/v1/task/<id>/result?expires=<unix time>&sig=<HMAC>``: the
  signature is an HMAC-SHA256 of the task id and the expiry time with a server secret
  (``ECHOMIMIC_SIGNING_KEY``, or a random key kept in ``<data>/signing.key``). A link whose
  signature does not match answers ``403 link_invalid``; a genuine link past its time answers
  ``410 link_expired``.

Every server that answers the links must share the secret: set ``ECHOMIMIC_SIGNING_KEY`` on all
of them, or let them share the data folder that holds the key file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EchomimicError

if TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import Request

    from .settings import Settings
    from .store import Job

KEY_FILE = "signing.key"


class LinkInvalid(EchomimicError):
    """A signed result link was altered, or signed with another key."""

    code = "link_invalid"
    http_status = 403


class LinkExpired(EchomimicError):
    """A signed result link is past its expiry time."""

    code = "link_expired"
    http_status = 410


def load_or_create_key(data_dir: str | os.PathLike) -> bytes:
    """The secret kept in ``<data_dir>/signing.key``, made (readable by the owner only) when
    missing. Several processes starting at once end up with the same key."""
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KEY_FILE
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".signing-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)               # atomic; fails when another process won
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    key = path.read_text().strip()
    if len(key) < 32:
        raise RuntimeError(f"the signing key in {path} is too short; delete the file to renew it")
    return key.encode()


class ResultSigner:
    """Signs and checks ``(task id, expiry time)`` pairs."""

    def __init__(self, secret: bytes | str, ttl: float = 3600.0):
        self.secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(self.secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self.ttl = float(ttl)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ResultSigner":
        """The signer of ``ECHOMIMIC_SIGNING_KEY``, or of the key file in the data folder."""
        secret = settings.signing_key or load_or_create_key(settings.data_dir)
        return cls(secret, ttl=settings.result_url_ttl)

    def signature(self, task_id: str, expires: int) -> str:
        msg = f"echomimic-result\n{task_id}\n{int(expires)}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()

    def sign(self, task_id: str, now: float | None = None) -> dict[str, Any]:
        """Query parameters ``{"expires", "sig"}`` of a link valid for ``ttl`` seconds."""
        expires = int((time.time() if now is None else now) + self.ttl)
        return {"expires": expires, "sig": self.signature(task_id, expires)}

    def verify(self, task_id: str, expires: Any, sig: Any, now: float | None = None) -> None:
        """Raise :class:`LinkInvalid` or :class:`LinkExpired` unless the link is good now."""
        try:
            when = int(str(expires))
        except ValueError:
            raise LinkInvalid("the result link is not valid") from None
        expected = self.signature(task_id, when).encode()
        if not hmac.compare_digest(expected, str(sig).encode("utf-8", "replace")):
            raise LinkInvalid("the result link is not valid")
        if when < (time.time() if now is None else now):
            raise LinkExpired("the result link has expired; read the task again for a new one")


def signer_of(state: Any) -> ResultSigner:
    """The app's signer (``app.state.signer``), made from its settings on first use."""
    signer = getattr(state, "signer", None)
    if signer is None:
        signer = ResultSigner.from_settings(state.settings)
        state.signer = signer
    return signer


def result_url(job: "Job", request: "Request") -> str | None:
    """The expiring download link of a completed job (``None`` when it has no result)."""
    if not job.result:
        return None
    state = request.app.state
    storage = state.storage
    if getattr(storage, "remote", False):
        return storage.presigned_url(job.result, state.settings.result_url_ttl,
                                     filename=f"{job.id}.{job.result.rsplit('.', 1)[-1]}")
    params = signer_of(state).sign(job.id)
    return str(request.url_for("task_result", task_id=job.id).include_query_params(**params))
