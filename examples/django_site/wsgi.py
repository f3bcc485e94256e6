"""Django's wsgi.py with telemetry:

    export DJANGO_SETTINGS_MODULE=django_site.settings REDIS_URL=redis://localhost:6379/0
    gunicorn -w 2 -b 127.0.0.1:8000 django_site.wsgi:application

Each request gets a SERVER span named after its URL pattern (``GET /items/<int:item_id>/``),
the request context in its logs, an access record and ``http.server.request.duration``;
``/metrics`` serves the exposition.
"""

import os

from django.core.wsgi import get_wsgi_application

import telemetry_infra as ti
from telemetry_infra.integrations.wsgi import instrument_wsgi

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
ti.configure(service_name="django-example")
application = instrument_wsgi(get_wsgi_application())
