"""The real-data commit set (files written by `build.py`; see DATA_CARD.md)."""
