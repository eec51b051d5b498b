"""Statistics that decide: multiple-testing corrections (``multiple``), and the tests the
monitoring, A/B analysis and offline comparison build on. Pure numpy/scipy; every function is
tested against an independent implementation and its error rate by simulation.

Import the submodules themselves (``from lossflow.stats.multiple import holm``).
"""
