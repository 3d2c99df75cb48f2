"""Unlearning methods as weight edits."""
