"""Lookalike's domain package: image decoding, embedding, the pgvector store, settings.

It imports neither boto3 nor Powertools: AWS lives at the edge (`lookalike_aws`, handlers).
"""
