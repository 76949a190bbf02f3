"""Evaluation: Compare (base vs tuned side by side), the did-it-learn report, before/after
benchmarks through lm-evaluation-harness (harness.py) and a GGUF as an lm-eval model
(llama_lm.py). Reads run folders; never trains.
"""
