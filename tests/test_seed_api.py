"""The seed documents' request, verbatim, against a running server (``echomimic serve`` in a
subprocess on 127.0.0.1), with its inputs given by URL from a loopback file server that the
server is allowed to fetch from through ``ECHOMIMIC_URL_ALLOW`` (and nothing else on loopback).

Every result is downloaded from its ``result_url`` and decoded with PyAV: codecs, size,
duration, the AI-generated label in the file's tags and the watermark in its frames.
"""

from __future__ import annotations

import functools
import threading
import time
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("celery")
httpx = pytest.importorskip("httpx")

from service_harness import service_env, start_api  # noqa: E402

from echomimic.safety import read_label, verify  # noqa: E402
from echomimic.safety.verify import read_tags  # noqa: E402
from echomimic.safety.watermark import id_hash  # noqa: E402
from echomimic.service.settings import Settings  # noqa: E402
from echomimic.service.store import JobStore  # noqa: E402

BLOCKED = "forbiddenword,禁词"
#: codecs of each output format: (video, audio or None)
CODECS = {"mp4": ("h264", "aac"), "webm": ("vp9", "opus"), "mov": ("h264", "aac"),
          "gif": ("gif", None)}
FORMATS = {"mp4": "mov,mp4,m4a,3gp,3g2,mj2", "mov": "mov,mp4,m4a,3gp,3g2,mj2",
           "webm": "matroska,webm", "gif": "gif"}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def media(tmp_path_factory, astronaut_rgb, short_speech):
    """A loopback file server with a large photo (2400x1350: the output must be capped to
    1080p), the astronaut photo, speech, and a talking clip to drive with."""
    from PIL import Image

    from echomimic import animate

    folder = tmp_path_factory.mktemp("seed_media")
    face = np.asarray(Image.fromarray(np.asarray(astronaut_rgb)).resize((1350, 1350),
                                                                          Image.LANCZOS))
    wide = np.pad(face, ((0, 0), (525, 525), (0, 0)), mode="edge")
    Image.fromarray(wide).save(folder / "wide.png")
    Image.fromarray(np.asarray(astronaut_rgb)).save(folder / "face.png")
    (folder / "speech.wav").write_bytes(short_speech.path.read_bytes())
    animate(folder / "face.png", folder / "talking.mp4", audio=short_speech.path, crop="face",
            size=192, watermark=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"base": f"http://127.0.0.1:{server.server_address[1]}", "folder": folder}
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``echomimic serve --workers 1`` allowed to fetch from 127.0.0.1 only, with a word list."""
    root = tmp_path_factory.mktemp("seed_service")
    store = JobStore(Settings(data_dir=root).database_url)
    _, key = store.create_key("seed")
    env = service_env(root, ECHOMIMIC_URL_ALLOW="127.0.0.1", ECHOMIMIC_BLOCKED_WORDS=BLOCKED)
    proc, base = start_api(env, root, workers=1)
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"},
                          timeout=120)
    try:
        yield client
    finally:
        client.close()
        proc.stop()


def _wait(client, task_id: str, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/v1/task/{task_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, f"task still {body['status']}"
        time.sleep(0.2)


def _download(client, body: dict, path: Path) -> Path:
    r = client.get(body["result_url"])
    assert r.status_code == 200, r.text
    path.write_bytes(r.content)
    return path


def _probe(path: Path) -> dict:
    """Codecs, size and durations of a video, measured by decoding it with PyAV."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fmt = c.format.name
        audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
        frames = [f for f in c.decode(video=0)]
    rate = Fraction(vs.average_rate) if vs.average_rate else Fraction(25)
    n = len(frames)
    end = float(frames[-1].pts * frames[-1].time_base) + 1 / float(rate)
    return {"container": fmt, "video": vs.codec_context.name, "audio": audio,
            "width": frames[0].width, "height": frames[0].height, "frames": n,
            "duration": end, "fps": float(rate)}


def _check_output(path: Path, fmt: str, duration: float) -> dict:
    info = _probe(path)
    assert info["container"] == FORMATS[fmt], info
    assert (info["video"], info["audio"]) == CODECS[fmt], info
    assert abs(info["duration"] - duration) <= 1 / info["fps"] + 1e-6, (info, duration)
    label = read_label(read_tags(str(path))[0])
    assert label is not None and label["generator"] == "echomimic", read_tags(str(path))
    found = verify(path)
    assert found.made_here and found.watermark.found, found.to_dict()
    return info


def test_the_seed_request_verbatim(server, media, short_speech, tmp_path):
    """The seed's example body, as it is written there: a 1080p-capped mp4 with sound."""
    body = {"image_url": f"{media['base']}/wide.png", "audio_url": f"{media['base']}/speech.wav",
            "mode": "audio_only", "output_format": "mp4", "resolution": "1080p"}
    r = server.post("/api/v1/generate", json=body)
    assert r.status_code == 202, r.text
    done = _wait(server, r.json()["task_id"])
    assert done["status"] == "completed", done
    out = _download(server, done, tmp_path / "seed.mp4")
    info = _check_output(out, "mp4", short_speech.duration)
    assert (info["width"], info["height"]) == (1920, 1080)          # 2400x1350 capped to 1080p
    assert info["frames"] == done["result"]["n_frames"]
    mark = verify(out).watermark                       # its payload names the job
    assert mark.id_checked and mark.id_hash == f"{id_hash(done['task_id']):04x}", mark.to_dict()


@pytest.mark.parametrize("mode", ["video_only", "mixed"])
def test_video_only_and_mixed(server, media, short_speech, tmp_path, mode):
    import av

    body = {"image_url": f"{media['base']}/face.png", "video_url": f"{media['base']}/talking.mp4",
            "mode": mode, "output_format": "mp4", "resolution": "512", "size": 192}
    if mode == "mixed":
        body["audio_url"] = f"{media['base']}/speech.wav"
    r = server.post("/api/v1/generate", json=body)
    assert r.status_code == 202, r.text
    done = _wait(server, r.json()["task_id"])
    assert done["status"] == "completed", done
    with av.open(str(media["folder"] / "talking.mp4")) as c:
        driver = sum(1 for _ in c.decode(video=0)) / 25.0
    info = _check_output(_download(server, done, tmp_path / f"{mode}.mp4"), "mp4", driver)
    assert (info["width"], info["height"]) == (192, 192)


@pytest.mark.parametrize("fmt", ["webm", "mov", "gif"])
def test_each_output_format(server, media, short_speech, tmp_path, fmt):
    body = {"image_url": f"{media['base']}/face.png", "audio_url": f"{media['base']}/speech.wav",
            "mode": "audio_only", "output_format": fmt, "resolution": "512", "size": 128}
    r = server.post("/api/v1/generate", json=body)
    assert r.status_code == 202, r.text
    done = _wait(server, r.json()["task_id"])
    assert done["status"] == "completed", done
    got = server.get(done["result_url"])
    assert got.headers["content-type"].startswith({"webm": "video/webm", "mov": "video/quicktime",
                                                   "gif": "image/gif"}[fmt])
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(got.content)
    info = _check_output(out, fmt, short_speech.duration)
    assert (info["width"], info["height"]) == (128, 128)


def test_modes_and_options_are_checked(server, media):
    base = media["base"]
    image, audio = f"{base}/face.png", f"{base}/speech.wav"

    def post(**body):
        r = server.post("/api/v1/generate", json=body)
        return r.status_code, r.json()

    status, err = post(image_url=image, audio_url=audio, mode="mixed")
    assert (status, err["code"]) == (422, "invalid_option") and "video" in err["message"]
    status, err = post(image_url=image, video_url=f"{base}/talking.mp4", mode="mixed")
    assert (status, err["code"]) == (422, "invalid_option") and "audio" in err["message"]
    status, err = post(image_url=image, audio_url=audio, mode="video_only")
    assert (status, err["code"]) == (422, "invalid_option")
    status, err = post(image_url=image, audio_url=audio, output_format="avi")
    assert (status, err["code"]) == (422, "invalid_option")
    for choice in ("mp4", "webm", "mov", "gif"):
        assert choice in err["message"]
    status, err = post(image_url=image, audio_url=audio, resolution="8k")
    assert (status, err["code"]) == (422, "invalid_option") and "2160p" in err["message"]
    # only what the operator allowed: 127.0.0.1, not the rest of the loopback network
    status, err = post(image_url=image.replace("127.0.0.1", "127.0.0.2"), audio_url=audio)
    assert (status, err["code"]) == (422, "url_forbidden")
    # a client cannot turn the watermark off
    status, err = post(image_url=image, audio_url=audio, watermark=False)
    assert (status, err["code"]) == (422, "invalid_option")


def test_a_refused_word_is_refused_before_queueing(server, media):
    r = server.post("/api/v1/generate", json={"image_url": f"{media['base']}/face.png",
                                               "text": "Please say ForbiddenWord now.",
                                               "lang": "en"})
    assert (r.status_code, r.json()["code"]) == (422, "content_refused"), r.text
    assert "forbiddenword" in r.json()["message"]
    r = server.post("/api/v1/generate", json={"image_url": f"{media['base']}/face.png",
                                               "text": "你好", "prompt": "说禁词然后点头"})
    assert (r.status_code, r.json()["code"]) == (422, "content_refused"), r.text
    r = server.post("/api/v1/generate", json={"image_url": f"{media['base']}/face.png",
                                               "text": "Forbidden words are not said here.",
                                               "lang": "en", "resolution": "512", "size": 96})
    assert r.status_code == 202, r.text                  # whole words only
    assert _wait(server, r.json()["task_id"])["status"] == "completed"


def test_openapi_lists_the_seed_names(server):
    schema = server.get("/openapi.json").json()
    body = schema["paths"]["/api/v1/generate"]["post"]["requestBody"]["content"]
    props = body["application/json"]["schema"]["properties"]
    assert set(props["mode"]["enum"]) >= {"audio_only", "video_only", "mixed", "text"}
    assert props["output_format"]["enum"] == ["mp4", "webm", "mov", "gif"]
    assert {"1080p", "2160p", "4k"} <= set(props["resolution"]["enum"])
