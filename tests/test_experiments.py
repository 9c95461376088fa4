"""Model versions and A/B experiments.

On a real server (`echomimic serve` on 127.0.0.1, two embedded workers): 20 tiny jobs go through
a 50/50 experiment defined by a settings file; both variants get at least 3 jobs (a fair draw of
20 gives fewer once in 2,500 runs), each job records its variant and its quality figures, and
the per-variant counts, means and Welch's test appear in `GET /api/v1/experiments/{name}` and in
`/metrics`, equal to what the jobs hold. The draw itself (weights, stickiness), the definitions' checks, the admin endpoint and
`GET /api/v1/models` are tested without rendering.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from service_harness import service_env, start_api  # noqa: E402

from echomimic.errors import InvalidOption  # noqa: E402
from echomimic.service.experiments import (FIGURES, assign,  # noqa: E402
                                           validate_definition)
from echomimic.service.settings import Settings  # noqa: E402
from echomimic.service.store import JobStore  # noqa: E402

N_JOBS = 20
EXPERIMENT = {"name": "expr-boost", "sticky": "job", "variants": [
    {"name": "control", "weight": 50},
    {"name": "boost", "weight": 50, "options": {"expression_scale": 1.6}}]}
JOB = {"text": "Hello there. Good morning.", "crop": "face", "size": "128", "fps": "8",
       "preset": "ultrafast"}
ADMIN = "admin-secret-for-tests"


# ------------------------------------------------------------------------------------------------
# the draw and the definitions (no server)
# ------------------------------------------------------------------------------------------------


def test_the_draw_follows_the_weights_and_is_sticky():
    d = validate_definition({"name": "ninety-ten", "sticky": "job", "variants": [
        {"name": "a", "weight": 90}, {"name": "b", "weight": 10}]})
    picks = [assign(d, owner="k1", job_id=f"{i:032x}")["name"] for i in range(4000)]
    share = picks.count("b") / len(picks)
    assert 0.08 < share < 0.12, share
    # the same job always lands in the same variant
    assert all(assign(d, owner="other", job_id=f"{i:032x}")["name"] == p
               for i, p in enumerate(picks[:200]))
    # sticky per key: every job of a key lands in one variant, and keys spread over both
    k = validate_definition({**d, "name": "per-key", "sticky": "key"})
    for owner in ("alice", "bob", "carol"):
        assert len({assign(k, owner=owner, job_id=f"{i:032x}")["name"] for i in range(50)}) == 1
    by_key = [assign(k, owner=f"key-{i}", job_id="x")["name"] for i in range(2000)]
    assert 0.07 < by_key.count("b") / len(by_key) < 0.13


@pytest.mark.parametrize("bad, match", [
    ({"name": "x", "variants": [{"name": "a"}]}, "two variants"),
    ({"name": "x", "variants": [{"name": "a"}, {"name": "a"}]}, "distinct"),
    ({"name": "x", "variants": [{"name": "a", "weight": 0}, {"name": "b"}]}, "weight"),
    ({"name": "x", "variants": [{"name": "a", "options": {"colour": 1}}, {"name": "b"}]},
     "unknown option"),
    ({"name": "x", "variants": [{"name": "a", "options": {"max_pixels": 5}}, {"name": "b"}]},
     "unknown option"),                                  # the server's own limits: not a variant's
    ({"name": "x", "variants": [{"name": "a", "options": {"fps": 500}}, {"name": "b"}]}, "fps"),
    ({"name": "x", "sticky": "day", "variants": [{"name": "a"}, {"name": "b"}]}, "sticky"),
    ({"name": "../x", "variants": [{"name": "a"}, {"name": "b"}]}, "name"),
])
def test_bad_definitions_are_refused(bad, match):
    with pytest.raises(InvalidOption, match=match):
        validate_definition(bad)


# ------------------------------------------------------------------------------------------------
# a running server
# ------------------------------------------------------------------------------------------------


class Server:
    def __init__(self, root: Path):
        settings = Settings(data_dir=root)
        self.store = JobStore(settings.database_url)
        _, self.key = self.store.create_key("ab-client")
        _, self.key_b = self.store.create_key("other")
        (root / "experiments.json").write_text(json.dumps([EXPERIMENT]), encoding="utf-8")
        models = root / "models" / "echomimic-v1"
        for version in ("1.0", "2.0-acc"):
            (models / version).mkdir(parents=True)
        env = service_env(root, ECHOMIMIC_EXPERIMENTS=str(root / "experiments.json"),
                          ECHOMIMIC_ADMIN_KEY=ADMIN, ECHOMIMIC_RATE_LIMIT="0",
                          ECHOMIMIC_MAX_ACTIVE_JOBS="0", ECHOMIMIC_QUALITY_IDENTITY_FRAMES="1",
                          ECHOMIMIC_MODELS_DIR=str(root / "models"))
        self.proc, self.base = start_api(env, root, workers=2)

    def client(self, key: str | None = None) -> "httpx.Client":
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60)

    def stop(self) -> None:
        self.proc.stop()
        self.store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("experiments"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def finished(server, astronaut_png):
    """20 jobs submitted through the 50/50 experiment, all finished."""
    photo = Path(astronaut_png).read_bytes()
    ids = []
    with server.client() as c:
        for _ in range(N_JOBS):
            res = c.post("/api/v1/generate", data=JOB,
                         files={"image": ("face.png", photo, "image/png")})
            assert res.status_code == 202, res.text
            ids.append(res.json()["task_id"])
        deadline = time.monotonic() + 900
        tasks = {}
        while len(tasks) < len(ids):
            for task_id in ids:
                if task_id not in tasks:
                    body = c.get(f"/api/v1/task/{task_id}").json()
                    if body["status"] in ("completed", "failed", "cancelled"):
                        tasks[task_id] = body
            assert time.monotonic() < deadline, f"{len(tasks)} of {len(ids)} jobs finished"
            time.sleep(0.5)
    return tasks


def test_twenty_jobs_land_in_both_variants_with_their_figures(server, finished):
    assert {t["status"] for t in finished.values()} == {"completed"}, \
        [t["error"] for t in finished.values() if t["error"]]
    by_variant: dict[str, list[dict]] = {}
    for t in finished.values():
        assert t["experiment"]["name"] == "expr-boost"
        by_variant.setdefault(t["experiment"]["variant"], []).append(t)
        quality = t["result"]["quality"]
        assert set(quality) == set(FIGURES)
        assert quality["lipsync_loudness_r"] is not None and quality["still_jitter"] is not None
    assert set(by_variant) == {"control", "boost"}
    assert all(len(v) >= 3 for v in by_variant.values()), {k: len(v) for k, v in by_variant.items()}
    # the variant's options were the ones rendered
    for t in finished.values():
        params = server.store.get(t["task_id"]).params
        scale = params["options"].get("expression_scale")
        assert scale == (1.6 if t["experiment"]["variant"] == "boost" else None), params


def _means(finished) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for t in finished.values():
        slot = out.setdefault(t["experiment"]["variant"], {f: [] for f in FIGURES})
        for f in FIGURES:
            if t["result"]["quality"][f] is not None:
                slot[f].append(t["result"]["quality"][f])
    return out


def test_the_experiment_endpoint_reports_counts_means_and_welch(server, finished, measured):
    from scipy import stats

    with server.client() as c:
        res = c.get("/api/v1/experiments/expr-boost")
        assert c.get("/api/v1/experiments/nope").json()["code"] == "not_found"
    assert res.status_code == 200, res.text
    body = res.json()
    values = _means(finished)
    variants = {v["name"]: v for v in body["variants"]}
    assert set(variants) == {"control", "boost"}
    for name, v in variants.items():
        n = sum(1 for t in finished.values() if t["experiment"]["variant"] == name)
        assert v["jobs"] == n and v["status"] == {"completed": n} and v["measured"] == n
        for f in FIGURES:
            xs = values[name][f]
            if xs:
                assert v["means"][f] == pytest.approx(sum(xs) / len(xs), rel=1e-9), f
                assert v["n"][f] == len(xs)
    for name, v in variants.items():
        measured(f"{name}: jobs", v["jobs"])
        for f in ("lipsync_loudness_r", "identity_mean", "mouth_jitter"):
            measured(f"{name}: mean {f}", v["means"][f])
    for f, w in body["comparison"]["against_control"]["boost"].items():
        if w["t"] is not None:
            measured(f"boost vs control: {f} Welch t / p", f"{w['t']:.3g} / {w['p']:.3g}")
    welch = body["comparison"]["against_control"]["boost"]["lipsync_loudness_r"]
    ref = stats.ttest_ind(values["boost"]["lipsync_loudness_r"],
                          values["control"]["lipsync_loudness_r"], equal_var=False)
    assert welch["t"] == pytest.approx(float(ref.statistic), rel=1e-9)
    assert welch["p"] == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert body["comparison"]["control"] == "control"


def test_metrics_export_the_figures_per_variant(server, finished):
    with server.client() as c:
        text = c.get("/metrics").text
    values = _means(finished)
    line = re.compile(r'^echomimic_experiment_(quality|jobs|quality_jobs)\{(.*)\} (\S+)$')
    seen: dict[tuple, float] = {}
    for ln in text.splitlines():
        m = line.match(ln)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            seen[(m.group(1), labels.get("variant"), labels.get("figure") or
                  labels.get("status"))] = float(m.group(3))
    for variant in ("control", "boost"):
        n = sum(1 for t in finished.values() if t["experiment"]["variant"] == variant)
        assert seen[("jobs", variant, "completed")] == n
        for f in ("lipsync_loudness_r", "identity_mean", "still_jitter", "mouth_jitter"):
            xs = values[variant][f]
            assert xs, (variant, f)
            assert seen[("quality", variant, f)] == pytest.approx(sum(xs) / len(xs), rel=1e-6)
            assert seen[("quality_jobs", variant, f)] == len(xs)


def test_experiments_are_defined_by_the_admin_only(server):
    new = {"sticky": "key", "variants": [{"name": "a", "weight": 9}, {"name": "b", "weight": 1,
                                                                       "renderer": "warp"}]}
    with server.client() as c:                      # a client key is not the admin key
        assert c.put("/api/v1/experiments/later", json=new).json()["code"] == "forbidden"
    with httpx.Client(base_url=server.base, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        res = admin.put("/api/v1/experiments/later", json={**new, "active": False})
        assert res.status_code == 200, res.text
        assert res.json()["variants"][1]["renderer"] == "warp"
        bad = admin.put("/api/v1/experiments/later2", json={"variants": [{"name": "a"}]})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_option"
    with server.client() as c:
        names = [e["name"] for e in c.get("/api/v1/experiments").json()["experiments"]]
        assert names == ["expr-boost", "later"]
        assert c.get("/api/v1/experiments/later").json()["variants"][0]["jobs"] == 0


def test_models_lists_renderers_with_versions_and_readiness(server):
    with server.client() as c:
        models = {m["renderer"]: m for m in c.get("/api/v1/models").json()["models"]}
        assert models["warp"]["ready"] is True
        assert [v["version"] for v in models["warp"]["versions"]] == ["builtin"]
        v1 = models["echomimic-v1"]
        assert [v["version"] for v in v1["versions"]] == ["1.0", "2.0-acc"]
        assert v1["default_version"] == "2.0-acc" and v1["needs_weights"] is True
        assert all(Path(v["weights"]).is_dir() for v in v1["versions"])
        # a job naming a version the renderer does not have is refused before it is queued
        for fields, code in (({"model_version": "9.9"}, "invalid_option"),
                             ({"renderer": "no-such"}, "invalid_option")):
            res = c.post("/api/v1/generate", json={"image_url": "http://127.0.0.1:9/x.png",
                                                   "text": "hi", **fields})
            assert res.json()["code"] == code, res.text
        assert c.get("/api/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
