"""Training: the plan (`TransferPlan`), the run (`run_transfer`), the phases, checkpoints,
the learning-rate finder, schedules and optimisers, losses and metrics, hardware,
several machines, saving, and the develop-model template.

Imports only from `templates.data` and `templates.models`.
"""
