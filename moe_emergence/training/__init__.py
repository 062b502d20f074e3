"""Training: the loop, its schedule, eval, collapse detection, resumable state, data parallel."""
