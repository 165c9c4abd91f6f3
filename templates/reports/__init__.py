"""Reports: evaluation (per-class scores, confusion matrix, worst errors), Grad-CAM, the
transfer report, learning curves, what a run ran on.

Imports only from the floors below (`data`, `models`); training writes its comparisons'
reports with them.
"""
