"""Prometheus metrics of the long-running processes, and their liveness and readiness over HTTP.

``defs`` names every metric (one place, so the dashboard and the code share one list);
``record`` turns a finished batch's ledger rows into counter increments; ``gauges`` reads the
fleet's state for the router; ``serve`` is the HTTP server and the multiprocess setup.
"""
