"""Evaluation: the metrics' descriptions, evaluate, importance sampling, validation, devices, generation quality."""
