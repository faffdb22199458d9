"""AWS adapters at the edge: S3 access, event parsing, secrets. Handlers import these."""
