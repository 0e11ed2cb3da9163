"""How the bridge meets its clients under gunicorn: worker.py (the worker class, gthread with
each request read whole in the event loop before a thread takes it) and framing.py (how
much of a request has arrived)."""
