"""The plain Starlette example app."""
