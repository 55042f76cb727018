"""Preference-heads workbench."""
