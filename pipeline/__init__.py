"""ecobatch core: settings, SQL ledger, Redis intake, Celery app, accounting and entry points."""
