"""Synthesized speech data set for the NEP demo model: command grammar, generator, features.

See ``docs/data.md``.
"""
