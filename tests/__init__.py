"""The Tally test suite (mirrors the packages under services/)."""
