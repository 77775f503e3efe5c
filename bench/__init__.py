"""The throughput benchmark: `make bench` runs bench/run.py against our service, the course's and Flask's floor."""
