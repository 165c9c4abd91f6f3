"""Training: the plan (`TransferPlan`), the run (`run_transfer`), the phases, checkpoints,
the learning-rate finder, schedules and optimisers, losses and metrics, hardware,
several machines, saving, the comparisons with scratch training and the reuse-depth
sweep, and the develop-model template.

Imports only from `templates.data`, `templates.models` and `templates.reports`.
"""
