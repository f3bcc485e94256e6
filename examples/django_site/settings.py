"""The smallest Django project that uses the cache and telemetry (see wsgi.py and views.py)."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
LOGGING_CONFIG = None  # telemetry_infra.configure() sets up logging
USE_TZ = True
