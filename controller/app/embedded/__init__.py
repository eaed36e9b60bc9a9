"""Embedded defaults: the simulated 3-node cluster's CIB and its desired state."""
