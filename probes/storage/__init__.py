"""Shared storage as the node sees it: mounts and DLM lockspaces."""
