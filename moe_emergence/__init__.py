"""moe-emergence: a DVC pipeline for a GPT-2 Mixture-of-Experts specialization experiment."""

__version__ = "0.1.0"
