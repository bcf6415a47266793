"""The NNI-free search: guided proposals (:mod:`.generator`) and the search core behind both NNI adapters."""
