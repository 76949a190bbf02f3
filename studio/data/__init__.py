"""Data: the Data step — files in (JSONL, CSV, PDF, docx, zip), formats detected and converted to
chat messages or preference pairs, recipes that write question/answer pairs from prose (with the
generators that run a model for them), checks, token statistics, held-out questions, the chat
template's loss mask, and the versioned dataset on disk (service.py). Never trains.
"""
