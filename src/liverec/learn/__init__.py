"""Continuous learning: follow the event log, train candidates, promote the better.

Owns: the models/ registry (registry.py), warm-starting a candidate from the served
model with a grown vocabulary (finetune.py) and the follow/train/evaluate/promote
loop (learner.py) that `liverec learn` and `liverec serve --learn-in-serve` run.
Described in docs/learning.md.
"""
