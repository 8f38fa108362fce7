"""Data, training runs over a ladder of model sizes, scaling-law fits and plots."""
