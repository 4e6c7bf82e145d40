"""Settings for prefloop.

Everything a deployment changes comes from the environment (see README's
"Production" section); the embedded defaults run on one machine with no
database server and no broker: SQLite under ``var/`` and a file-system Celery
broker.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from .env import env_bool, env_int, env_list, env_str, secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PREFLOOP_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = secret_key(VAR_DIR)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "annotate",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "annotate.unavailable.DatabaseUnavailableMiddleware",
    "annotate.throttle.LoginThrottleMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "annotate.urls"
WSGI_APPLICATION = "annotate.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
_DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'prefloop.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(
        _DATABASE_URL,
        # Reusing server connections saves a connection set-up per request;
        # SQLite has nothing to reuse.
        conn_max_age=env_int(
            "DB_CONN_MAX_AGE", 0 if _DATABASE_URL.startswith("sqlite") else 60, minimum=0
        ),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, with the health check skipped for a connection that answered a
    # request less than PREFLOOP_DB_CHECK_DELAY seconds ago (annotate.pgbackend).
    DATABASES["default"]["ENGINE"] = "annotate.pgbackend"
    # Parameters bound by the server let a connection prepare the statements it runs again and
    # again (the annotation queue's, the token look-up), so PostgreSQL plans them once per
    # connection rather than on every request. 0 turns this off, for a pooler in transaction
    # mode that cannot carry prepared statements.
    _PREPARE_AFTER = env_int("DB_PREPARE_THRESHOLD", 2, minimum=0)
    if _PREPARE_AFTER:
        DATABASES["default"]["OPTIONS"] = {
            "server_side_binding": True,
            "prepare_threshold": _PREPARE_AFTER,
        }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write
    # lock when a transaction starts, so two writers queue on the busy timeout
    # instead of failing with "database is locked" halfway through.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so that a worker process started by a test sees
    # the rows the test committed.
    # One file per test process, so that two test runs in one checkout never
    # share (and delete) each other's database.
    DATABASES["default"]["TEST"] = {
        "NAME": env_str("PREFLOOP_TEST_DB", str(VAR_DIR / f"test-{os.getpid()}.sqlite3"))
    }

# Seconds after a request during which its PostgreSQL connection is reused without a health
# check (annotate.pgbackend); 0 checks before every request.
PREFLOOP_DB_CHECK_DELAY = env_int("PREFLOOP_DB_CHECK_DELAY", 2, minimum=0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the app directories too, so a checkout works before
# collectstatic has run.
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Upload limits: requests larger than this are refused with a clear message.
PREFLOOP_MAX_UPLOAD_BYTES = env_int("PREFLOOP_MAX_UPLOAD_BYTES", 100 * 1024 * 1024, minimum=1)
# Uploads larger than this are imported by a worker, with a progress page.
PREFLOOP_IMPORT_INLINE_BYTES = env_int("PREFLOOP_IMPORT_INLINE_BYTES", 5 * 1024 * 1024, minimum=0)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024, minimum=1)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- REST API ----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "annotate.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "annotate.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "annotate.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "annotate.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "prefloop API",
    "DESCRIPTION": "Preference annotation: projects, prompts, comparisons and judgments.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # request bodies get their own components: without read-only fields, with the checks that
    # apply only to what is sent (a blank name, say)
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ------------------------------------------------------------------
# The embedded broker keeps messages as files under var/broker: a real
# `celery worker` process consumes them, no server needed.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env_str(
    "CELERY_RESULT_BACKEND", f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite3'}"
)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "training.tasks.generate_*": {"queue": "generate"},
    "training.tasks.train_*": {"queue": "train"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "release-expired-leases": {
        "task": "annotate.tasks.release_expired_leases",
        "schedule": 60.0,
    },
    "check-round-triggers": {
        "task": "training.tasks.check_triggers",
        "schedule": 30.0,
    },
    "fail-lost-training-runs": {
        "task": "training.tasks.fail_lost_runs",
        "schedule": 60.0,
    },
    "fail-abandoned-dataset-jobs": {
        "task": "annotate.tasks.fail_abandoned_dataset_jobs",
        "schedule": 300.0,
    },
    "recover-stuck-rounds": {
        "task": "training.tasks.recover_stuck_rounds",
        "schedule": 60.0,
    },
}
# Hard time limits of the loop's tasks in seconds (the soft limit is a minute less).
PREFLOOP_GENERATE_TIME_LIMIT = env_int("PREFLOOP_GENERATE_TIME_LIMIT", 3600, minimum=61)
PREFLOOP_TRAIN_TIME_LIMIT = env_int("PREFLOOP_TRAIN_TIME_LIMIT", 6 * 3600, minimum=61)
# A running training attempt that has not reported progress for this long counts as lost.
PREFLOOP_TRAIN_STALE_SECONDS = env_int("PREFLOOP_TRAIN_STALE_SECONDS", 1800, minimum=60)
# A round generating, queued for training or evaluating that has not changed for this long has
# its task queued again (the worker died, or the broker was down when it was sent).
# A running import or export whose progress file has not changed for this long is failed
# by the beat (annotate.datasets.runner.fail_abandoned_jobs): its worker died.
PREFLOOP_JOB_STALE_SECONDS = env_int("PREFLOOP_JOB_STALE_SECONDS", 1800, minimum=60)
PREFLOOP_ROUND_STALE_SECONDS = env_int("PREFLOOP_ROUND_STALE_SECONDS", 600, minimum=10)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis hands an unacknowledged message to another worker after the visibility timeout,
    # even while the first still runs it: longer than any task may run, so a long training is
    # never delivered twice at once. A message whose worker died comes back after it, or
    # sooner through the beat's recover_stuck_rounds.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": max(PREFLOOP_GENERATE_TIME_LIMIT, PREFLOOP_TRAIN_TIME_LIMIT) + 600,
        **CELERY_BROKER_TRANSPORT_OPTIONS,
    }
# Where `serve_model` listens, and the URL the lead's pages show for it.
PREFLOOP_SERVE_PORT = env_int("PREFLOOP_SERVE_PORT", 8001, minimum=1)
# The key `serve_model` requires and the Playground sends; empty: one generated once into
# $PREFLOOP_VAR_DIR/serve_api_key (see training/serving_key.py).
PREFLOOP_SERVE_API_KEY = env_str("PREFLOOP_SERVE_API_KEY", "")
# The largest request body `serve_model` reads (1 MB holds a long chat many times over).
PREFLOOP_SERVE_MAX_BODY_BYTES = env_int("PREFLOOP_SERVE_MAX_BODY_BYTES", 1_000_000, minimum=1024)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# --- Base models a lead may name (see training/model_roots.py) ---------------
# Directories whose model directories and .gguf files a project's base_model may name, after
# resolving links; empty: $PREFLOOP_VAR_DIR/models and the converted-model cache.
PREFLOOP_MODEL_ROOTS = env_list("PREFLOOP_MODEL_ROOTS", [])
# Hub ids a base_model may name ("org/name" or "org/*"); empty: only what the local hub
# cache already holds.
PREFLOOP_HUB_ALLOWLIST = env_list("PREFLOOP_HUB_ALLOWLIST", [])
# Where trained versions are published for every worker and serve_model (see
# training/core/store.py): a directory or an fsspec URL (s3://bucket/prefix); empty: the local
# $PREFLOOP_VAR_DIR/models, which is also where readers cache what they fetch.
PREFLOOP_MODEL_STORE = env_str("PREFLOOP_MODEL_STORE", "")

# --- Cache and login throttling (see annotate/throttle.py) -------------------
# Shared by every web process: Redis when PREFLOOP_CACHE_URL names one, else files under var/.
_CACHE_URL = env_str("PREFLOOP_CACHE_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _CACHE_URL}
        if _CACHE_URL.startswith(("redis://", "rediss://", "unix://"))
        else {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    )
}
# Modules whose callables a lead may name as a loop's gate judge (besides the built-in rules);
# comma-separated, empty by default. The run_rounds command (an operator's) takes any path.
PREFLOOP_JUDGE_MODULES = [
    m.strip() for m in os.environ.get("PREFLOOP_JUDGE_MODULES", "").split(",") if m.strip()
]
# Quality figures: above this many judgments a view after a change shows the latest figures and
# a worker refreshes them, instead of recomputing in the web process.
PREFLOOP_QUALITY_INLINE_JUDGMENTS = env_int("PREFLOOP_QUALITY_INLINE_JUDGMENTS", 20_000, minimum=0)
# Progress: from this many pairs on, a project's totals on the annotate page come from the cache,
# counted again at most every 2-60 s (see annotate.progress), not on every view.
PREFLOOP_PROGRESS_EXACT_PAIRS = env_int("PREFLOOP_PROGRESS_EXACT_PAIRS", 20_000, minimum=0)
# Failed logins allowed per username, and per client address, in each window.
PREFLOOP_LOGIN_FAILURES_PER_USER = env_int("PREFLOOP_LOGIN_FAILURES_PER_USER", 10, minimum=1)
PREFLOOP_LOGIN_FAILURES_PER_ADDRESS = env_int("PREFLOOP_LOGIN_FAILURES_PER_ADDRESS", 200, minimum=1)
PREFLOOP_LOGIN_WINDOW_SECONDS = env_int("PREFLOOP_LOGIN_WINDOW_SECONDS", 900, minimum=1)

# --- Imports -----------------------------------------------------------------
# Decoded size caps (characters) on one imported value and on one row's text together.
PREFLOOP_IMPORT_MAX_CELL_CHARS = env_int("PREFLOOP_IMPORT_MAX_CELL_CHARS", 1_000_000, minimum=1)
PREFLOOP_IMPORT_MAX_ROW_CHARS = env_int("PREFLOOP_IMPORT_MAX_ROW_CHARS", 4_000_000, minimum=1)
