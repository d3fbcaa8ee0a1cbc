"""End-to-end experiments that chain training, evaluation and audits from one config."""
