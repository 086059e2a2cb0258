"""Gemma 3 (text): see ``model.py``."""
