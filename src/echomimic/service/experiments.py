"""A/B experiments: split jobs between variants (option sets, renderers, model versions) and
measure each variant with the reference-free quality figures of ``echomimic evaluate``.

An experiment is a named split::

    {"name": "expr-boost", "sticky": "job",
     "variants": [{"name": "control", "weight": 50},
                  {"name": "boost", "weight": 50, "options": {"expression_scale": 1.4}}]}

A variant may set options of the option table (:mod:`echomimic.options`, the ones a client may
set), ``renderer`` and ``model_version``; they win over the request's. ``sticky`` says what
keeps a variant: ``key`` (every job of an API key lands in the same variant) or ``job`` (each
job is drawn on its own). The draw is a hash of the experiment's name and the key (or the job
id) into [0, 1), cut by the weights: deterministic, with no shared state between API processes.

Experiments are defined by a settings file (``ECHOMIMIC_EXPERIMENTS``: a JSON list of
definitions, loaded at start-up) or by the admin endpoint (``PUT /api/v1/experiments/{name}``),
and kept in the job database (tables ``experiments`` and ``experiment_jobs``), so every API
process and worker sees the same ones. While an experiment is active, every new job joins it
(the first active one by name when there are several). The job records its variant
(``experiment`` in the task) and, after the render, the worker measures the video
(:func:`measure_video`) and stores the figures with the job. :func:`report` gives counts and
means per variant and Welch's t-test of each figure between each variant and the first one;
:class:`ExperimentMetrics` exports the same per variant to Prometheus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Float, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from ..errors import InvalidOption
from ..options import AnimateOptions, check_value, coerce, options_for
from .store import COMPLETED, JobRow, JobStore

log = logging.getLogger("echomimic.service.experiments")

__all__ = ["FIGURES", "Experiments", "ExperimentMetrics", "validate_definition", "assign",
           "measure_video", "report"]

#: The reference-free figures of ``echomimic evaluate`` stored with every job of an experiment.
FIGURES: tuple[str, ...] = ("lipsync_loudness_r", "silence_closure", "identity_mean",
                            "identity_max", "still_jitter", "mouth_jitter")
#: Whether a higher value of a figure is better (for reading the report).
HIGHER_IS_BETTER = {"lipsync_loudness_r": True, "silence_closure": True, "identity_mean": False,
                    "identity_max": False, "still_jitter": False, "mouth_jitter": False}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CLIENT_OPTIONS = {o.name: o for o in options_for("rest")}


class _Base(DeclarativeBase):
    pass


class ExperimentRow(_Base):
    __tablename__ = "experiments"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)


class ExperimentJobRow(_Base):
    __tablename__ = "experiment_jobs"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment: Mapped[str] = mapped_column(String(64), index=True)
    variant: Mapped[str] = mapped_column(String(64))
    figures: Mapped[str | None] = mapped_column(Text, nullable=True)   # JSON, after the render
    created_at: Mapped[float] = mapped_column(Float)


# ------------------------------------------------------------------------------------------------
# definitions and the draw
# ------------------------------------------------------------------------------------------------


def validate_definition(raw: Any, name: str | None = None) -> dict[str, Any]:
    """A checked, normalised experiment definition (raises :class:`InvalidOption`)."""
    if not isinstance(raw, dict):
        raise InvalidOption("an experiment is a JSON object")
    unknown = set(raw) - {"name", "sticky", "active", "variants", "description"}
    if unknown:
        raise InvalidOption(f"unknown experiment field(s): {', '.join(sorted(unknown))}")
    name = name or raw.get("name")
    if raw.get("name") not in (None, name):
        raise InvalidOption(f"the experiment's name {raw.get('name')!r} differs from {name!r}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidOption("an experiment needs a name of letters, digits, '.', '_', '-' "
                            "(at most 64)")
    sticky = raw.get("sticky", "key")
    if sticky not in ("key", "job"):
        raise InvalidOption(f"sticky must be 'key' or 'job', got {sticky!r}")
    variants = raw.get("variants")
    if not isinstance(variants, list) or len(variants) < 2:
        raise InvalidOption("an experiment needs at least two variants")
    out_variants, seen = [], set()
    for v in variants:
        if not isinstance(v, dict):
            raise InvalidOption("a variant is a JSON object")
        bad = set(v) - {"name", "weight", "options", "renderer", "model_version"}
        if bad:
            raise InvalidOption(f"unknown variant field(s): {', '.join(sorted(bad))}")
        vname = v.get("name")
        if not isinstance(vname, str) or not _NAME.match(vname) or vname in seen:
            raise InvalidOption(f"variant names must be distinct names, got {vname!r}")
        seen.add(vname)
        weight = v.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or \
                not math.isfinite(weight) or weight <= 0:
            raise InvalidOption(f"variant {vname!r}: weight must be a positive number")
        options = {}
        for key, value in (v.get("options") or {}).items():
            if key not in _CLIENT_OPTIONS:
                raise InvalidOption(f"variant {vname!r}: unknown option {key!r}")
            options[key] = coerce(_CLIENT_OPTIONS[key], value)
            check_value(_CLIENT_OPTIONS[key], options[key])
        AnimateOptions.from_kwargs(**options)
        item = {"name": vname, "weight": float(weight), "options": options}
        for key in ("renderer", "model_version"):
            if v.get(key) not in (None, ""):
                item[key] = str(v[key])
        out_variants.append(item)
    active = raw.get("active", True)
    if not isinstance(active, bool):
        raise InvalidOption("active must be true or false")
    return {"name": name, "sticky": sticky, "active": active,
            "description": str(raw.get("description") or ""), "variants": out_variants}


def assign(definition: dict[str, Any], *, owner: str, job_id: str) -> dict[str, Any]:
    """The variant of a job: a hash of the experiment's name and the key (sticky ``key``) or the
    job id (sticky ``job``) into [0, 1), cut by the weights."""
    unit = owner if definition["sticky"] == "key" else job_id
    digest = hashlib.sha256(f"{definition['name']}\0{unit}".encode()).digest()
    x = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    total = sum(v["weight"] for v in definition["variants"])
    edge = 0.0
    for v in definition["variants"]:
        edge += v["weight"] / total
        if x < edge:
            return v
    return definition["variants"][-1]


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------


def _identity_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("dlib") is not None


_IDENTITY: dict[str, Any] = {}          # the dlib model and photo descriptors, once per process
_IDENTITY_LOCK = threading.Lock()


def _identity(video: str | os.PathLike, image: str | os.PathLike, n: int) -> dict[str, float]:
    """Identity distances of ``n`` frames spread over the clip to the photo (dlib; the model
    is loaded once per process and the photo's descriptor kept by its content hash)."""
    import numpy as np

    from ..quality.evaluate import load_image
    from ..quality.identity import IdentityModel
    from ..quality.measure import iter_video_frames

    frames = list(iter_video_frames(video))
    if not frames or n < 1:
        return {}
    picks = sorted({int(round(i)) for i in np.linspace(0, len(frames) - 1, min(n, len(frames)))})
    digest = hashlib.sha256(Path(image).read_bytes()).hexdigest()
    with _IDENTITY_LOCK:
        model = _IDENTITY.get("model")
        if model is None:
            model = _IDENTITY["model"] = IdentityModel()
        ref = _IDENTITY.get(digest)
        if ref is None:
            ref = _IDENTITY[digest] = model.descriptor(load_image(image))
        if ref is None:
            return {}
        d = []
        for i in picks:
            desc = model.descriptor(frames[i])
            if desc is not None:
                d.append(float(np.linalg.norm(desc - ref)))
    if not d:
        return {}
    return {"identity_mean": sum(d) / len(d), "identity_max": max(d)}


def measure_video(video: str | os.PathLike, image: str | os.PathLike, *,
                  identity_frames: int | None = None) -> dict[str, float | None]:
    """The reference-free figures (:data:`FIGURES`) of a rendered video: lip-sync r with the
    loudness, closure in pauses and jitter (``echomimic evaluate``), and the identity distance
    to the photo on ``identity_frames`` frames spread over the clip (dlib, when the ``quality``
    extra is installed; ``ECHOMIMIC_QUALITY_IDENTITY_FRAMES``, default 8; 0 leaves it out).
    ``None`` where a figure cannot be computed (no pause, no face ...)."""
    from ..quality.evaluate import evaluate_video

    if identity_frames is None:
        identity_frames = int(os.environ.get("ECHOMIMIC_QUALITY_IDENTITY_FRAMES", "8") or 0)
    res = dict(evaluate_video(video, image=image, identity=False, background=False))
    if identity_frames > 0 and _identity_available():
        res.update(_identity(video, image, identity_frames))
    out: dict[str, float | None] = {}
    for k in FIGURES:
        v = res.get(k)
        out[k] = float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None
    return out


def _welch(a: list[float], b: list[float]) -> dict[str, float | None]:
    """Welch's two-sample t-test (unequal variances) of ``b`` against ``a``."""
    if len(a) < 2 or len(b) < 2:
        return {"t": None, "p": None, "diff": None}
    from scipy import stats

    res = stats.ttest_ind(b, a, equal_var=False)
    t, p = float(res.statistic), float(res.pvalue)
    diff = float(sum(b) / len(b) - sum(a) / len(a))
    return {"t": t if math.isfinite(t) else None, "p": p if math.isfinite(p) else None,
            "diff": diff}


# ------------------------------------------------------------------------------------------------
# the registry (in the job database)
# ------------------------------------------------------------------------------------------------


class Experiments:
    """Experiment definitions and per-job variants and figures, in the job store's database."""

    def __init__(self, store: JobStore):
        self.store = store
        _Base.metadata.create_all(store.engine)
        self._session = sessionmaker(store.engine, expire_on_commit=False)

    # -- definitions ------------------------------------------------------------------------------

    def load_file(self, path: str | os.PathLike) -> list[str]:
        """Define (or redefine) the experiments of a settings file: a JSON list of definitions
        (or ``{"experiments": [...]}``). Returns their names."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidOption(f"cannot read the experiments file {str(path)!r}: {exc}") from None
        if isinstance(data, dict):
            data = data.get("experiments")
        if not isinstance(data, list):
            raise InvalidOption(f"{path}: expected a JSON list of experiments")
        return [self.define(item)["name"] for item in data]

    def define(self, raw: Any, name: str | None = None) -> dict[str, Any]:
        definition = validate_definition(raw, name)
        with self._session() as s, s.begin():
            row = s.get(ExperimentRow, definition["name"])
            text = json.dumps(definition, sort_keys=True)
            if row is None:
                s.add(ExperimentRow(name=definition["name"], definition=text,
                                    updated_at=time.time()))
            else:
                row.definition, row.updated_at = text, time.time()
        return definition

    def get(self, name: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.get(ExperimentRow, name)
            return json.loads(row.definition) if row else None

    def all(self) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(select(ExperimentRow).order_by(ExperimentRow.name)).all()
            return [json.loads(r.definition) for r in rows]

    def stop(self, name: str) -> dict[str, Any] | None:
        """Mark an experiment inactive (its jobs and figures stay)."""
        d = self.get(name)
        if d is None:
            return None
        d["active"] = False
        return self.define(d)

    # -- jobs -------------------------------------------------------------------------------------

    def route(self, params: dict[str, Any], *, owner: str, job_id: str) -> dict[str, Any]:
        """``params`` of a new job with the active experiment's variant applied: its options,
        ``renderer`` and ``model_version`` win over the request's; ``experiment`` records it."""
        active = [d for d in self.all() if d.get("active")]
        if not active:
            return params
        definition = active[0]
        variant = assign(definition, owner=owner, job_id=job_id)
        out = dict(params)
        options = dict(out.get("options", {}))
        options.update(variant.get("options", {}))
        if "renderer" in variant:
            options["renderer"] = variant["renderer"]
        if "model_version" in variant:
            out["model_version"] = variant["model_version"]
        out["options"] = options
        out["experiment"] = {"name": definition["name"], "variant": variant["name"]}
        return out

    def record(self, job_id: str, experiment: str, variant: str) -> None:
        with self._session() as s, s.begin():
            if s.get(ExperimentJobRow, job_id) is None:
                s.add(ExperimentJobRow(job_id=job_id, experiment=experiment, variant=variant,
                                       created_at=time.time()))

    def store_figures(self, job_id: str, figures: dict[str, Any]) -> None:
        with self._session() as s, s.begin():
            row = s.get(ExperimentJobRow, job_id)
            if row is not None:
                row.figures = json.dumps(figures, sort_keys=True)

    def rows(self, name: str | None = None) -> list[tuple[str, str, str, dict | None]]:
        """``(experiment, variant, job status, figures)`` of every job of an experiment (all
        experiments when ``name`` is None)."""
        q = (select(ExperimentJobRow.experiment, ExperimentJobRow.variant, JobRow.status,
                    ExperimentJobRow.figures)
             .join(JobRow, JobRow.id == ExperimentJobRow.job_id))
        if name is not None:
            q = q.where(ExperimentJobRow.experiment == name)
        with self._session() as s:
            return [(e, v, st, json.loads(f) if f else None) for e, v, st, f in s.execute(q)]


def report(experiments: Experiments, name: str) -> dict[str, Any] | None:
    """Counts, means and Welch's t-tests per variant of one experiment (``None``: no such)."""
    definition = experiments.get(name)
    if definition is None:
        return None
    names = [v["name"] for v in definition["variants"]]
    per: dict[str, dict[str, Any]] = {
        v: {"jobs": 0, "status": {}, "measured": 0, "values": {f: [] for f in FIGURES}}
        for v in names}
    for _e, variant, status, figures in experiments.rows(name):
        slot = per.setdefault(variant, {"jobs": 0, "status": {}, "measured": 0,
                                        "values": {f: [] for f in FIGURES}})
        slot["jobs"] += 1
        slot["status"][status] = slot["status"].get(status, 0) + 1
        if status == COMPLETED and figures:
            slot["measured"] += 1
            for f in FIGURES:
                if figures.get(f) is not None:
                    slot["values"][f].append(float(figures[f]))
    variants = []
    for v, slot in per.items():
        means = {f: (sum(x) / len(x) if x else None) for f, x in slot["values"].items()}
        variants.append({"name": v, "jobs": slot["jobs"], "status": slot["status"],
                         "measured": slot["measured"], "means": means,
                         "n": {f: len(x) for f, x in slot["values"].items()}})
    control = names[0]
    tests = {}
    for v in names[1:]:
        tests[v] = {f: _welch(per[control]["values"][f], per[v]["values"][f]) for f in FIGURES}
    return {"experiment": definition, "variants": variants,
            "comparison": {"control": control, "test": "welch_t", "against_control": tests},
            "higher_is_better": HIGHER_IS_BETTER}


class ExperimentMetrics:
    """Prometheus collector: jobs per experiment, variant and status; the mean of each figure
    per variant (``echomimic_experiment_quality``) and how many jobs it averages."""

    def __init__(self, experiments: Experiments):
        self.experiments = experiments

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        jobs = GaugeMetricFamily("echomimic_experiment_jobs", "Jobs of an experiment by variant "
                                 "and status", labels=["experiment", "variant", "status"])
        mean = GaugeMetricFamily("echomimic_experiment_quality", "Mean quality figure of the "
                                 "completed jobs of a variant (echomimic evaluate, no reference)",
                                 labels=["experiment", "variant", "figure"])
        count = GaugeMetricFamily("echomimic_experiment_quality_jobs", "Completed jobs whose "
                                  "figure is averaged", labels=["experiment", "variant", "figure"])
        try:
            rows = self.experiments.rows()
        except Exception:  # the database is away: no experiment metrics this scrape
            log.warning("experiment metrics unavailable", exc_info=True)
            rows = []
        counts: dict[tuple[str, str, str], int] = {}
        values: dict[tuple[str, str, str], list[float]] = {}
        for e, v, status, figures in rows:
            counts[(e, v, status)] = counts.get((e, v, status), 0) + 1
            if status == COMPLETED and figures:
                for f in FIGURES:
                    if figures.get(f) is not None:
                        values.setdefault((e, v, f), []).append(float(figures[f]))
        for labels, n in sorted(counts.items()):
            jobs.add_metric(list(labels), n)
        for labels, xs in sorted(values.items()):
            mean.add_metric(list(labels), sum(xs) / len(xs))
            count.add_metric(list(labels), len(xs))
        yield jobs
        yield mean
        yield count


def measure_job(store: JobStore, job_id: str, video: str | os.PathLike,
                image: str | os.PathLike) -> dict[str, Any] | None:
    """Measure a job's video and store the figures with its experiment record (called by the
    worker after the render, before the job is marked completed). A failure of the measurement
    never fails the job: it is logged and the job has no figures."""
    try:
        figures = measure_video(video, image)
        Experiments(store).store_figures(job_id, figures)
        return figures
    except Exception:  # noqa: BLE001 - the video is fine; only its figures are missing
        log.warning("job %s: quality figures failed", job_id, exc_info=True)
        return None


# ------------------------------------------------------------------------------------------------
# routes: models and experiments
# ------------------------------------------------------------------------------------------------


def add_model_routes(app: Any, settings: Any, owner: Any) -> None:
    """``GET /api/v1/models``; ``GET /api/v1/experiments``, ``GET|PUT|DELETE
    /api/v1/experiments/{name}``. Defining or stopping an experiment needs the admin key
    (``ECHOMIMIC_ADMIN_KEY`` as the bearer token; anyone when authentication is off)."""
    import hmac

    from .errors import Forbidden, NotFound, Unauthorized
    from .models import list_models

    experiments: Experiments = app.state.experiments
    api = "/api/v1"

    def admin(request: Request) -> None:
        if not settings.auth:
            return
        secret = os.environ.get("ECHOMIMIC_ADMIN_KEY", "").strip()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("an admin key is required: Authorization: Bearer <admin key>")
        if not secret:
            raise Forbidden("experiments are defined by the settings file "
                            "(ECHOMIMIC_EXPERIMENTS) on this server: no ECHOMIMIC_ADMIN_KEY")
        if not hmac.compare_digest(token.strip().encode(), secret.encode()):
            raise Forbidden("this key may not define experiments")

    @app.get(f"{api}/models", summary="The renderers this server can run, their versions "
                                       "(weight folders) and whether each is ready")
    async def models(_who: str = Depends(owner)):
        return {"models": await run_in_threadpool(list_models, settings)}

    @app.get(f"{api}/experiments", summary="The experiments (A/B splits) and their variants")
    def list_experiments(_who: str = Depends(owner)):
        return {"experiments": experiments.all()}

    @app.get(f"{api}/experiments/{{name}}", summary="An experiment: jobs, mean quality figures "
             "per variant, and Welch's t-test of each variant against the first")
    def get_experiment(name: str, _who: str = Depends(owner)):
        found = report(experiments, name)
        if found is None:
            raise NotFound(f"no experiment {name!r}")
        return found

    @app.put(f"{api}/experiments/{{name}}", summary="Define or change an experiment (admin)")
    async def put_experiment(name: str, request: Request):
        admin(request)
        try:
            body = await request.json()
        except ValueError:
            raise InvalidOption("the request body is not valid JSON") from None
        return experiments.define(body, name)

    @app.delete(f"{api}/experiments/{{name}}", summary="Stop an experiment (admin); its jobs "
                "and figures stay")
    def stop_experiment(name: str, request: Request):
        admin(request)
        found = experiments.stop(name)
        if found is None:
            raise NotFound(f"no experiment {name!r}")
        return found
