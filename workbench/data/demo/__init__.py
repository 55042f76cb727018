"""The bundled demo set (files written by `build.py`; see DATA_CARD.md)."""
