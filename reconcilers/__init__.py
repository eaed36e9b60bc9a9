"""The decisions: pure planners, observed x desired -> actions and findings."""
