"""Pacemaker's view: crm_mon status and CIB configuration, parsed into controller.model."""
