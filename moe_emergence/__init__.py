"""moe-emergence: a DVC pipeline for a GPT-2 Mixture-of-Experts specialization experiment."""

import os

# OpenMP threads that spin while they wait stall each other when another process
# holds one of the cores (a 5-10x slowdown measured on a shared 2-core machine);
# waiting passively costs nothing when the cores are free. OpenMP reads this when
# torch loads, and every stage imports this package before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
