"""Export: SavedModel and TFLite, the output folder a recipe writes, the predictor.

Imports only from the floors below (`data`, `models`, `training`, `reports`).
"""
