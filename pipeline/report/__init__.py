"""Reports and summaries of jobs, with their plots."""
