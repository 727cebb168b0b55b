"""Retention policies: rules, loading, the decision and its explanation."""
