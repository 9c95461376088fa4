"""GraphQL beside REST, against a real server (`echomimic serve` on 127.0.0.1, one embedded
worker): the `generate` mutation (multipart upload and URL inputs), the `taskProgress`
subscription over WebSocket up to `completed`, `task`/`tasks` seen only by their own key, and
errors that carry the REST codes in `extensions.code`.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("strawberry", reason="GraphQL needs the service extra (strawberry-graphql)")
httpx = pytest.importorskip("httpx")
ws_client = pytest.importorskip("websockets.sync.client")

from service_harness import service_env, start_api  # noqa: E402

from echomimic.service.settings import Settings  # noqa: E402
from echomimic.service.store import JobStore  # noqa: E402

TASK_FIELDS = "id status progress stage result_url error { code message } result"
UPLOAD = ("mutation($img: Upload!, $opts: AnimateOptionsInput) { generate(input: "
          "{image: $img, text: \"Hello there. How are you today?\", options: $opts}) "
          "{ id status } }")
SMALL = {"crop": "face", "size": 128, "fps": 12, "preset": "ultrafast"}
BLOCKED = "forbiddenword"          # the operator's word list (content moderation)


class Server:
    def __init__(self, root: Path):
        self.root = root
        settings = Settings(data_dir=root)
        store = JobStore(settings.database_url)
        _, self.key_a = store.create_key("alice")
        _, self.key_b = store.create_key("bob")
        store.close()
        env = service_env(root, ECHOMIMIC_MAX_AUDIO_SECONDS="8", ECHOMIMIC_URL_ALLOW="127.0.0.1",
                          ECHOMIMIC_RATE_LIMIT="0", ECHOMIMIC_BLOCKED_WORDS=BLOCKED)
        self.proc, self.base = start_api(env, root, workers=1)

    def client(self, key: str | None) -> "httpx.Client":
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60)

    def gql(self, key: str | None, query: str, variables: dict | None = None) -> dict:
        with self.client(key) as c:
            res = c.post("/graphql", json={"query": query, "variables": variables or {}})
        assert res.status_code == 200, res.text
        return res.json()

    def upload(self, key: str, image: bytes, options: dict | None = None) -> dict:
        ops = {"query": UPLOAD, "variables": {"img": None, "opts": options or SMALL}}
        with self.client(key) as c:
            res = c.post("/graphql", data={"operations": json.dumps(ops),
                                           "map": json.dumps({"0": ["variables.img"]})},
                         files={"0": ("face.png", image, "image/png")})
        assert res.status_code == 200, res.text
        return res.json()

    def subscribe(self, key: str, task_id: str, *, via: str = "payload") -> list[dict]:
        """Every message of `taskProgress` (graphql-transport-ws) until `complete`."""
        url = self.base.replace("http://", "ws://") + "/graphql"
        headers = {"Authorization": f"Bearer {key}"} if via == "header" else None
        payload = {"Authorization": f"Bearer {key}"} if via == "payload" else {}
        got = []
        with ws_client.connect(url, subprotocols=["graphql-transport-ws"],
                               additional_headers=headers, open_timeout=20) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            assert json.loads(ws.recv(timeout=20))["type"] == "connection_ack"
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": f"subscription {{ taskProgress(id: \"{task_id}\") {{ {TASK_FIELDS} }} }}"}}))
            while True:
                msg = json.loads(ws.recv(timeout=120))
                if msg["type"] == "ping":
                    ws.send(json.dumps({"type": "pong"}))
                    continue
                got.append(msg)
                if msg["type"] in ("complete", "error"):
                    return got

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("graphql"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def photo(astronaut_png) -> bytes:
    return Path(astronaut_png).read_bytes()


@pytest.fixture(scope="module")
def completed(server, photo):
    """A job submitted by upload and followed by the subscription to its end."""
    res = server.upload(server.key_a, photo)
    assert "errors" not in res, res
    task = res["data"]["generate"]
    assert task["status"] == "queued" and len(task["id"]) == 32
    return task["id"], server.subscribe(server.key_a, task["id"])


def test_mutation_then_subscription_progress_until_completed(server, completed):
    task_id, messages = completed
    assert messages[-1]["type"] == "complete", messages[-1]
    updates = [m["payload"]["data"]["taskProgress"] for m in messages if m["type"] == "next"]
    assert len(updates) >= 2, updates                  # it started before the job finished
    assert updates[0]["status"] in ("queued", "running")
    assert all(u["id"] == task_id for u in updates)
    progress = [u["progress"] for u in updates]
    assert progress == sorted(progress)                # never goes back
    assert any(0 < p < 1 for p in progress), progress  # progress in the middle was seen
    last = updates[-1]
    assert last["status"] == "completed" and last["progress"] == 1.0
    assert last["result"]["width"] == 128 and last["result"]["fps"] == 12
    # the signed result link of the subscription downloads the video, without a key
    with httpx.Client(timeout=60) as c:
        video = c.get(last["result_url"])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"


def test_task_and_tasks_are_seen_by_their_own_key_only(server, completed):
    task_id, _ = completed
    q = f"{{ task(id: \"{task_id}\") {{ id status }} }}"
    mine = server.gql(server.key_a, q)
    assert mine["data"]["task"] == {"id": task_id, "status": "completed"}
    other = server.gql(server.key_b, q)
    assert other["data"] is None
    assert other["errors"][0]["extensions"]["code"] == "not_found"
    with server.client(server.key_b) as c:          # the same as REST
        assert c.get(f"/api/v1/task/{task_id}").json()["code"] == "not_found"
    listing = "{ tasks(first: 10) { nodes { id } page_info { has_next_page end_cursor } } }"
    assert task_id in [n["id"] for n in server.gql(server.key_a, listing)["data"]["tasks"]["nodes"]]
    assert task_id not in [n["id"] for n in
                           server.gql(server.key_b, listing)["data"]["tasks"]["nodes"]]
    done = server.gql(server.key_a, "{ tasks(status: completed) { nodes { id status } } }")
    assert {n["status"] for n in done["data"]["tasks"]["nodes"]} == {"completed"}
    failed = server.gql(server.key_a, "{ tasks(status: failed) { nodes { id } } }")
    assert task_id not in [n["id"] for n in failed["data"]["tasks"]["nodes"]]
    # another key cannot follow the task either
    sub = server.subscribe(server.key_b, task_id)
    assert sub[-1]["type"] == "error" or sub[0]["payload"]["errors"][0]["extensions"]["code"] \
        == "not_found"
    codes = [e["extensions"]["code"] for m in sub if m["type"] in ("next", "error")
             for e in (m["payload"] if isinstance(m["payload"], list)
                       else m["payload"].get("errors", []))]
    assert codes == ["not_found"], sub


def test_tasks_pages_with_a_cursor(server, photo):
    ids = []
    for _ in range(2):
        res = server.upload(server.key_b, photo)
        ids.append(res["data"]["generate"]["id"])
    q = ("query($after: String) { tasks(first: 1, after: $after) "
         "{ nodes { id } page_info { has_next_page end_cursor } } }")
    first = server.gql(server.key_b, q)["data"]["tasks"]
    assert first["page_info"]["has_next_page"] is True
    second = server.gql(server.key_b, q, {"after": first["page_info"]["end_cursor"]})["data"]["tasks"]
    assert [first["nodes"][0]["id"], second["nodes"][0]["id"]] == ids[::-1]   # newest first
    bad = server.gql(server.key_b, q, {"after": "not-a-cursor"})
    assert bad["errors"][0]["extensions"]["code"] == "invalid_option"


def test_generate_by_url_through_the_rest_path(server, astronaut_png):
    folder = Path(astronaut_png).parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    media = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=media.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{media.server_address[1]}/{Path(astronaut_png).name}"
        res = server.gql(server.key_a, "mutation($u: String!) { generate(input: {image_url: $u, "
                         "text: \"Good morning.\", resolution: \"512\", options: {size: 128, "
                         "fps: 12}}, idempotency_key: \"gql-url-1\") { id status } }", {"u": url})
        assert "errors" not in res, res
        task_id = res["data"]["generate"]["id"]
        # the same Idempotency-Key answers the same task, as REST does
        again = server.gql(server.key_a, "mutation($u: String!) { generate(input: {image_url: "
                           "$u, text: \"Good morning.\"}, idempotency_key: \"gql-url-1\") "
                           "{ id } }", {"u": url})
        assert again["data"]["generate"]["id"] == task_id
        with server.client(server.key_a) as c:
            rest = c.post("/api/v1/generate", json={"image_url": url, "text": "Good morning."},
                          headers={"Idempotency-Key": "gql-url-1"})
        assert rest.json()["task_id"] == task_id
        last = server.subscribe(server.key_a, task_id, via="header")
        final = [m for m in last if m["type"] == "next"][-1]["payload"]["data"]["taskProgress"]
        assert final["status"] == "completed" and final["result"]["width"] == 128
    finally:
        media.shutdown()


def test_errors_carry_the_rest_codes(server, photo, faceless_png):
    cases = {
        "unauthorized": (None, {"image_url": "http://127.0.0.1:9/x.png", "text": "hi"}),
        "invalid_option": (server.key_a, {"image_url": "http://127.0.0.1:9/x.png", "text": "hi",
                                          "fps": 99}),
        "url_forbidden": (server.key_a, {"image_url": "http://169.254.169.254/latest/x.png",
                                         "text": "hi"}),
    }
    for code, (key, fields) in cases.items():
        opts = {k: v for k, v in fields.items() if k == "fps"}
        inp = {k: v for k, v in fields.items() if k != "fps"}
        res = server.gql(key, "mutation($i: GenerateInput!) { generate(input: $i) { id } }",
                         {"i": {**inp, **({"options": opts} if opts else {})}})
        assert res["data"] is None, res
        assert res["errors"][0]["extensions"]["code"] == code, res
        with server.client(key) as c:                  # REST answers the same code
            rest = c.post("/api/v1/generate", json=fields)
        assert rest.json()["code"] == code
        assert res["errors"][0]["extensions"]["status"] == rest.status_code
    # a photo without a face: no_face, before anything is queued
    res = server.upload(server.key_a, Path(faceless_png).read_bytes())
    assert res["errors"][0]["extensions"]["code"] == "no_face"
    # an option outside the table's limits, by upload
    res = server.upload(server.key_a, photo, {**SMALL, "size": 8})
    assert res["errors"][0]["extensions"]["code"] == "invalid_option"
    assert "size" in res["errors"][0]["message"]
    # a subscription without a key
    url = server.base.replace("http://", "ws://") + "/graphql"
    with ws_client.connect(url, subprotocols=["graphql-transport-ws"], open_timeout=20) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=20))["type"] == "connection_ack"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription { taskProgress(id: \"0123\") { id } }"}}))
        msg = json.loads(ws.recv(timeout=20))
    errors = msg["payload"] if isinstance(msg["payload"], list) else msg["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "unauthorized"


def test_a_refused_word_gives_content_refused(server, photo):
    """Content moderation answers GraphQL with the REST code, before anything is queued."""
    query = ("mutation($img: Upload!, $t: String, $p: String) { generate(input: "
             "{image: $img, text: $t, prompt: $p, options: {size: 128}}) { id } }")
    listing = "{ tasks(first: 50) { nodes { id } } }"
    before = server.gql(server.key_b, listing)["data"]["tasks"]["nodes"]
    refused = 0
    for text, prompt in (("Please say ForbiddenWord now.", None),
                         ("Good morning.", "nod, then whisper forbiddenword")):
        ops = {"query": query, "variables": {"img": None, "t": text, "p": prompt}}
        with server.client(server.key_b) as c:
            res = c.post("/graphql", data={"operations": json.dumps(ops),
                                           "map": json.dumps({"0": ["variables.img"]})},
                         files={"0": ("face.png", photo, "image/png")})
            assert res.status_code == 200, res.text
            body = res.json()
            assert body["data"] is None, body
            err = body["errors"][0]
            assert err["extensions"]["code"] == "content_refused", body
            assert err["extensions"]["status"] == 422 and "forbiddenword" in err["message"].lower()
            refused += 1
            # REST answers the same for the same text
            rest = c.post("/api/v1/generate", data={"text": text, **({"prompt": prompt} if prompt else {})},
                          files={"image": ("face.png", photo, "image/png")})
            assert (rest.status_code, rest.json()["code"]) == (422, "content_refused"), rest.text
    assert refused == 2
    assert server.gql(server.key_b, listing)["data"]["tasks"]["nodes"] == before   # nothing queued
