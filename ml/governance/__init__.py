"""Governance: differentially private exports (privacy.py)."""
