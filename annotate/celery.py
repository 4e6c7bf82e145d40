import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")

app = Celery("prefloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Finds the ``tasks`` module of each installed app; the dataset and quality tasks live one
# package down.
app.autodiscover_tasks(["annotate.datasets", "annotate.quality"])
