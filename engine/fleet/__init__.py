"""Many streams as a service: metrics and health endpoints, budget-driven degradation, and Ray workers.

Nothing here imports Ray at import time: ``engine.fleet.ray_workers`` loads it when a cluster is used,
and ``require_ray`` says how to install it where it is missing.
"""
