"""Garbage collection: plans for delete and sweep, their execution, trash, check and run reports."""
