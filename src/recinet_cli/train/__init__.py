"""Training: task resolution, the graph cache, the DDP-ready engine, checkpoints.

``recinet train`` is a thin layer over :func:`recinet_cli.train.engine.train`.
"""
