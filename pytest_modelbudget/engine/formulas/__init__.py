"""What each aten op costs: the table (``table.py``) and the formula families that fill it.

A new family (mixture-of-experts grouped matmuls, quantized kernels) is a module of its own here,
imported below so that its ``register_cost`` calls run.
"""

# Order matters: ``matmul`` loads PyTorch's own table first, and the families after it replace
# its entries where they price more (the fused attention kernels' softmax and dropout).
from . import matmul  # noqa: F401, I001 - registers
from . import attention, detection, elementwise, experts, movement, quantized, recurrent, spectral  # noqa: F401 - they register
from .table import COSTS, FREE_OPS, Cost, cost_of, has_formula, register_formula

__all__ = ["COSTS", "FREE_OPS", "Cost", "cost_of", "has_formula", "register_formula"]
