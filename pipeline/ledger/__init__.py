"""The SQL ledger, the record of truth: tables, engines, retries while the database is away,
job/prompt/batch state, the read side.
"""
