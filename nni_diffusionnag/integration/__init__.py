"""The NNI adapters: the only part of the package that imports NNI.

- :mod:`.strategy`: :class:`DiffusionNAG`, an ``nni.nas.strategy.Strategy``;
- :mod:`.tuner`: :class:`DiffusionNAGTuner`, an ``nni.tuner.Tuner`` for ``nnictl create``;
- :mod:`.compat`: fixes for NNI 3.0 on today's stack and :class:`DiffusionNAGExperiment`;
- :mod:`.portal_fix`: the web portal's trial/parameter binding at concurrency > 1;
- :mod:`.evaluators`: table look-up and training evaluators.
"""
