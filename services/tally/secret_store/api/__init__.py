"""HTTP routes of the secret-store, one router per concept; ``deps`` has the dependencies."""
