"""Tests of the Kubernetes operator (tally_operator): builders, clients, and kopf on kmock."""
