"""Configuration every side reads: settings, secrets, client connections, reader access.

It imports only ``projections`` (pure) and third-party clients, never ``streams``,
``exporters`` or ``stack``, so that those may all depend on it and the dependencies point
one way: ``streams`` -> ``stack`` -> ``config`` -> ``projections``, ``exporters`` ->
``config``.
"""
