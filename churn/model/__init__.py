"""The model: the customer schema, the data's cleaning, training, the model file, scoring and explanations."""
