"""corral.sim: virtual time and the deterministic chaos simulator."""
