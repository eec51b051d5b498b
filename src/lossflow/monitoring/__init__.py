"""Monitoring: reference profiles, drift, prior shift, delayed-label performance and the retrain
decision (see the modules; importing the package loads none of them)."""
