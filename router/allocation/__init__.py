"""Offline allocation of load to sites and hours: the LP, ADMM, Pareto fronts (LP sweep and NSGA-
II), and the allocation file the live router can follow.
"""
