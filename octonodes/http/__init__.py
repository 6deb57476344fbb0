"""Each node's HTTP API (`node run --listen HOST:PORT`), served by uvicorn
and Starlette in a background thread of the node process.

One file a concern: `server` (the app and its thread, and the role table),
`context` (what the handlers share: the worker and a database connection
per thread), `errors` (library errors as HTTP answers), `access` (API keys
and the role each route needs), `ping` (the load balancer's health check,
from the node's own state), `nodes` (the nodes API), `packages` (streaming
uploads) and `metrics` (Prometheus).
"""
