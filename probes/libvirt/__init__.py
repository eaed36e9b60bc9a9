"""libvirt's view: domains, their state, disks and consoles, per node."""
