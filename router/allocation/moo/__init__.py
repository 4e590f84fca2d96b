"""Multi-objective search after SLIT: NSGA-II over allocation and model choice.

:mod:`router.allocation.moo.instance` holds an allocation scenario with a model menu, a fixed charge for
waking a site and queueing in the time to first token; :mod:`router.allocation.moo.nsga` searches it with
pymoo's NSGA-II; :mod:`router.allocation.moo.compare` measures that front against the weighted-sum LP sweep
of :mod:`router.allocation.pareto` on the same instance.
"""
