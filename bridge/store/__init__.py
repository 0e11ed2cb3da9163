"""The durable outbox: what was accepted, waiting for (or done with) its send.

records.py holds the records every layer above uses; the interface and its backends
follow (store/sqlite/)."""
