"""Bulk exports: records, fingerprints, traceable batches, trace, decoys."""
