"""Architecture properties computed exactly from node types (parameters, FLOPs).

Pure numpy/torch (no NNI import): usable as cost constraints or guidance in the diffusion
sampler. See :mod:`.nasbench201` for the NAS-Bench-201 cost model and its conventions.
"""

from .nasbench201 import (KINDS, NB201Macro, budget_constraint, cost_table, cost_target, count, count_sample, expected_cost,
                          legal_mask)

__all__ = ["KINDS", "NB201Macro", "budget_constraint", "cost_table", "cost_target", "count", "count_sample", "expected_cost",
           "legal_mask"]
