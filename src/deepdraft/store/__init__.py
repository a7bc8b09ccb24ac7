"""Persistence of runs: the journal (runs, steps, checkpoints, events, LLM cache, egress records)."""
