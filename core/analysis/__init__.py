"""Embeddings and real-vs-synthetic quality analysis."""
