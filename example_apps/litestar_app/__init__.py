"""The Litestar example app (see ``app.py`` for how to run it)."""
