"""Deferred jobs: the planner's low-carbon window for each, kept in SQL and released once."""
