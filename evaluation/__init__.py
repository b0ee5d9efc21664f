"""Offline evaluation: PLM-VideoBench metrics and a pluggable LLM judge."""
