"""Scoring files of customers in chunks, on one machine (score.py) or on Spark."""
