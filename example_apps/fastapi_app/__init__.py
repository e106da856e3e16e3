"""The FastAPI example app (``python -m example_apps.fastapi_app`` runs the demo)."""
