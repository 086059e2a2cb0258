"""Gemma 2: see ``model.py``."""
