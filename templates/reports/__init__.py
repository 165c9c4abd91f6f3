"""Reports: evaluation, Grad-CAM, the transfer report and comparisons, plots, source selection.

Imports only from the floors below (`data`, `models`, `training`).
"""
