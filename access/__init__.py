"""One access from start to end, with no HTTP."""
