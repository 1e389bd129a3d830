"""Source adapters: vendor payloads in, canonical events (docs/events.md) out. Pure: no I/O.

The HTTP service that receives the payloads, checks their signatures and
publishes the events is ``streams/webhooks.py`` (``salespulse ingest``).
"""
