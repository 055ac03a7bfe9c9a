"""Tests of tally.secret_store."""
