"""Entry points: the CLI, the Celery app and its tasks, `ecobatch run` and its child processes, the
embedded Redis. The only place that names pipeline, router and workers together.
"""
