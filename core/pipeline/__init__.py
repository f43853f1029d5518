"""The paper's pipeline: retrieval -> reasoning -> generation -> validation."""
