"""Errors of the service front (inputs by URL, upload sizes, authentication).

They extend :class:`echomimic.errors.EchomimicError`, so they carry a stable ``code`` and an
``http_status`` and the API answers them as ``{"code", "message"}``.
"""

from __future__ import annotations

from ..errors import EchomimicError


class UrlRefused(EchomimicError):
    """The URL's scheme or resolved address is not allowed (loopback, private, metadata …)."""

    code = "url_forbidden"
    http_status = 422


class UrlFetchFailed(EchomimicError):
    """The URL could not be fetched (connection, status, timeout)."""

    code = "url_fetch_failed"
    http_status = 422


class InputTooLarge(EchomimicError):
    """An uploaded or fetched input is over its byte limit."""

    code = "input_too_large"
    http_status = 413


class Unauthorized(EchomimicError):
    """No API key, or an unknown or revoked one."""

    code = "unauthorized"
    http_status = 401


class NotFound(EchomimicError):
    """No such task for this API key."""

    code = "not_found"
    http_status = 404


class NotReady(EchomimicError):
    """The task has no result (yet)."""

    code = "not_ready"
    http_status = 409


class UnsupportedMediaType(EchomimicError):
    """The request body is neither multipart/form-data nor JSON."""

    code = "unsupported_media_type"
    http_status = 415


class Forbidden(EchomimicError):
    """The caller may not do this (e.g. define experiments without the admin key)."""

    code = "forbidden"
    http_status = 403
