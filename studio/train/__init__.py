"""Training: a run spec becomes a run folder and a child process (runs.py, child.py); the loop
(loop.py) and its callback (callback.py), its losses, the soft anchor, batches with replay,
offloading, checkpoints, the forgetting budget's choice (selection.py), preference objectives,
and the measured memory check (measure.py). Modules only the training child imports may import
torch at their top (loop.py, callback.py).
"""
