"""Example handlers: how users write theirs. `streamjobs up` runs these by default.

Importing the package registers every example on engine's default registry.
"""

from handlers import demo, email, flaky, report

__all__ = ["demo", "email", "flaky", "report"]
