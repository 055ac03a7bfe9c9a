"""Tests of the Helm chart helm/tally."""
