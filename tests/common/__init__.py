"""Tests of tally.common."""
