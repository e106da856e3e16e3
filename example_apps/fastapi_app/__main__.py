"""Run the demo: the FastAPI example on http://127.0.0.1:8000 with generated traffic.

Open http://127.0.0.1:8000/metrics (or ``curl`` it) to see the numbers.
"""

from __future__ import annotations

import os

import uvicorn

from example_apps import traffic

if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    traffic.start_in_background("127.0.0.1", port)
    print(f"Demo on http://127.0.0.1:{port}  -  metrics: http://127.0.0.1:{port}/metrics")
    uvicorn.run("example_apps.fastapi_app.app:app", host="127.0.0.1", port=port)
