"""Synthetic clinical trial workbench: Retrieval-Reasoning generation of synthetic trials."""
__version__ = "0.1.0"
