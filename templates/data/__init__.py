"""Data: files and downloads, image and text splits, tokenisation, seeded batches.

The lowest floor: it imports nothing else from `templates`.
"""
