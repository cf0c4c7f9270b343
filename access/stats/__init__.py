"""Statistics with disclosure control."""
