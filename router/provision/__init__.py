"""Carbon-aware provisioning after EcoServe: which fleet to buy, keep and run.

``ecobatch provision`` solves a mixed-integer program (:mod:`router.provision.milp`, HiGHS via
``scipy.optimize.milp``) over a catalogue of device types (:mod:`router.provision.catalogue`,
embodied figures with provenance in :mod:`router.provision.hardware`) for a workload and grid
(:mod:`router.provision.workload`): the carbon-optimal design, the performance-, energy- and
cost-optimised design points and the pillar ablation (:mod:`router.provision.designs`), and a
check of the chosen fleet in the simulator (:mod:`router.provision.validate`).
"""
