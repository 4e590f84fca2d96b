"""The device worker's service side: the batch task body and the Celery heartbeat step."""
