"""P-RGE: parallelized randomized gradient estimation on LoRA-FA adapters.

This package holds the algorithm only. It never imports flwr or ray, so it can be tested
and reused without the federated runtime.
"""
