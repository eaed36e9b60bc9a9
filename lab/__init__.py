"""The 3-node KVM lab cluster on one machine (see lab.py)."""
