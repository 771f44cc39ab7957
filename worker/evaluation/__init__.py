"""Evaluation of trained adapters: pure scoring functions (no torch) and the generation that feeds them."""
