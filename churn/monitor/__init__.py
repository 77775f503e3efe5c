"""Monitoring the model in production: drift against the training data, the prediction log, outcomes and reports."""
