"""Reproducing the papers: the ablation runner, its tables and plots, and the reproduction status.

The verdicts themselves are pure and live apart (``textvae.verdicts``).
"""
