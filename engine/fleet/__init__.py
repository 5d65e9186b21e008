"""Many streams as a service (``streamseg serve``): the config file (``config``), the streams in one
process (``local``) or on Ray workers (``ray_fleet`` on ``supervisor``, ``ray_workers``, ``placement``),
the control API (``control``), metrics and health endpoints (``metrics``), and budget-driven
degradation (``degrade``).

Nothing here imports Ray at import time: ``engine.fleet.ray_workers`` loads it when a cluster is used,
and ``require_ray`` says how to install it where it is missing.
"""
