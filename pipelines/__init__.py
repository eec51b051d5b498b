"""Prefect flows: the composition roots of lossflow's pipelines."""
