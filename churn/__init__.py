"""Churn prediction: training and serving a logistic-regression model on the IBM Telco churn data."""
