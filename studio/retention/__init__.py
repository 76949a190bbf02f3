"""Retention: what keeps the tuned model what it was — self-replay prompts and answers, the base
model's shipped answers, the safety probes, adapter strength, intruder dimensions and the levers
a run used. Used by training and by the report; imports neither.
"""
