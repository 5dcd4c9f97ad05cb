"""Test servers that follow the real protocols: TGI (`tgi.py`) and the Hugging Face Hub (`hub.py`).

Imported as `tests.servers.*` (pytest puts the repository root on the path, see pyproject.toml).
"""
