"""Emphasis recovery: keyword prompt rewrites and activation scaling."""
