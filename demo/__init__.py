"""Demos: demo.ipynb and live.py (python -m demo.live)."""
