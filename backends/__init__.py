"""corral.backends: storage backends (memory now; Redis to follow)."""
