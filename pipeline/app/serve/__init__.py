"""``ecobatch serve``: OpenAI's Files and Batches endpoints over HTTP (an entry point).

A batch is an ecobatch job (same id). Uploaded files, batch records and the output and error
files live in a files folder (``--files-dir``) that every host running ``serve`` shares; the
prompts, answers and job states live in the ledger as for any job.
"""
