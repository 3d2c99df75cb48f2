"""Prompt attribution and contribution tracking."""
