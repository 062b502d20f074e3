"""GPT-2 with Mixture-of-Experts MLPs: router, dispatch, losses, ghost experts, checkpoints."""
