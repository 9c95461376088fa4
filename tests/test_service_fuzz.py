"""Property-based fuzzing of the REST API from its own OpenAPI description (schemathesis).

Every operation is called in-process (ASGI, no socket) with generated requests, valid and
invalid, with a valid API key; no answer may be a server error (5xx). So that submissions get past
the decoders, generated multipart submissions carry a real photo (and, in some, real speech)
with the generated fields and options. Inputs by URL are refused before any name is resolved, so
nothing is contacted. Examples are bounded and derandomized so the run is short and repeatable.
"""

from __future__ import annotations

import socket

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

import echomimic.service.app as app_module  # noqa: E402
from echomimic.service.app import create_app  # noqa: E402
from echomimic.service.errors import UrlRefused  # noqa: E402
from echomimic.service.settings import Settings  # noqa: E402

_getaddrinfo = socket.getaddrinfo

#: generated requests per operation and mode (positive: valid by the schema, negative: not)
EXAMPLES = 50


def _no_fetch(url: str, **_kw):
    raise UrlRefused(f"URL inputs are off in this test: {url[:80]!r}")


def _loopback_only(host, *args, **kwargs):
    """``socket.getaddrinfo`` that answers only for the loopback (no name is ever looked up)."""
    if str(host) not in ("127.0.0.1", "localhost", "::1"):
        raise socket.gaierror(socket.EAI_NONAME, f"lookups are off in this test: {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


@pytest.fixture(scope="module")
def api(tmp_path_factory, astronaut_png, short_speech):
    patch = pytest.MonkeyPatch()
    patch.setattr(app_module, "fetch", _no_fetch)
    patch.setattr(socket, "getaddrinfo", _loopback_only)       # a second guard: no DNS at all
    root = tmp_path_factory.mktemp("fuzz")
    app = create_app(Settings(data_dir=root, auth=True, rate_limit=0, max_active_jobs=0,
                              max_audio_seconds=5.0))
    _, key = app.state.store.create_key("fuzz")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield app, schema, key, {"image": astronaut_png.read_bytes(),
                             "audio": short_speech.path.read_bytes()}
    patch.undo()


def _operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_openapi_describes_every_route(api):
    app, schema, _, _ = api
    labels = {op.label for op in _operations(schema)}
    assert {"POST /api/v1/generate", "GET /api/v1/task/{task_id}",
            "GET /api/v1/task/{task_id}/result", "DELETE /api/v1/task/{task_id}",
            "GET /healthz", "GET /readyz"} <= labels


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])
def test_no_server_errors(api, mode):
    app, schema, key, media = api
    failures: list[str] = []
    called: dict[str, int] = {}
    accepted: list[bool] = []
    form = app.openapi()["paths"]["/api/v1/generate"]["post"]["requestBody"]["content"]
    known = set(form["multipart/form-data"]["schema"]["properties"])
    for operation in _operations(schema):

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode), real=st.sampled_from(
            ["none", "image", "image+audio"]))
        def run(case, real):
            if real != "none" and mode == GenerationMode.POSITIVE \
                    and case.media_type == "multipart/form-data" \
                    and isinstance(case.body, dict):
                # keep the generated numbers and switches, but only real fields, no free-form
                # strings (rarely a valid choice) and no second input, so a share of these
                # submissions gets past the input checks into the queue
                for name, value in list(case.body.items()):
                    if (name not in known or name in ("video", "mode") or name.endswith("_url")
                            or isinstance(value, (str, bytes))):
                        case.body.pop(name)
                for name in real.split("+"):
                    case.body[name] = media[name]
                if "audio" in real:
                    case.body.pop("text", None)
            headers = {"Authorization": f"Bearer {key}"}
            response = case.call(headers=headers)
            if operation.label == "POST /api/v1/generate":
                accepted.append(response.status_code == 202)
            called[operation.label] = called.get(operation.label, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{operation.label} -> {response.status_code}: "
                                f"{response.text[:300]}\n  {case.as_curl_command(headers)}")

        try:
            run()
        except Unsatisfiable:      # nothing in this operation can be made invalid (no inputs)
            assert mode == GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures[:10])
    assert called.get("POST /api/v1/generate", 0) >= EXAMPLES // 2
    assert called.get("GET /api/v1/task/{task_id}/result", 0) >= EXAMPLES // 2
    if mode == GenerationMode.POSITIVE:
        assert any(accepted), "no generated submission got past the input checks"
