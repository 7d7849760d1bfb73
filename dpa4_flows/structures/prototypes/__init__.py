"""The prototype library of :mod:`dpa4_flows.structures.generate` (package data: prototypes.json)."""
