"""The ground floor: object storage and media helpers that every stage (and search) builds on.

Nothing here imports Beam, torch or transformers, so the lightest tools (search, status) stay light.
"""
