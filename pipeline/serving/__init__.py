"""Serving apart from learning: the shared serving rule, model snapshots, the predictor's core."""
