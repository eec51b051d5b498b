"""The service's routes, one router per concern: predict/rank, feedback, probes, admin."""
