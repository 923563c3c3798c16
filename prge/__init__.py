"""P-RGE: parallelized randomized gradient estimation on LoRA-FA adapters.

This package holds the algorithm only. It never imports flwr or ray, so it can be tested
and reused without the federated runtime.
"""

import logging as _logging

# transformers imports torchao when it is installed; torchao then logs, in every process, that its
# CUDA-only kernels cannot load on a CPU machine, and torch warns about torchao's enum
# registrations. Neither concerns a CPU run, and Ray would print them once per client process.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
