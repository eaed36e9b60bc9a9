"""The only code that changes the cluster. Actuators never decide; they apply what was admitted."""
