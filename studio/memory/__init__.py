"""Memory: the torch-free estimate of a run's GPU memory, fit verdicts and advice from the
catalogues, and the Memory step's service (which calibrates by earlier measured checks). The
measured check itself trains a few real steps, so it lives with training (train/measure.py) and
is handed to the service by the facade.
"""
