"""Corosync's view: quorum and membership, from corosync-quorumtool."""
