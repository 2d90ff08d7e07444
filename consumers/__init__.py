"""Kafka ingestion: parse, validate, dead-letter, dedupe, join and buffer behaviour events."""
