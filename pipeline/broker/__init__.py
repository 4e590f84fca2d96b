"""Redis as the broker carries it: the pending list of prompt references, worker heartbeats,
restoring the list from SQL.
"""
