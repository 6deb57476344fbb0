"""Each node's HTTP API (`node run --listen HOST:PORT`), served by uvicorn
and Starlette in a background thread of the node process.

One file a concern: `server` (the app and its thread), `api` (the REST
API's route table, each route with the role it needs), `context` (what the
handlers share: the worker and a database connection per thread), `errors`
(library errors as HTTP answers), `access` (API keys and the role each
route needs), `collections` (Octopus's envelope and paging), `ping` (the
load balancer's health check, from the node's own state), the resources
(`root`, `nodes`, `tasks`, `events`, `package_files`, and `packages` for
streaming uploads), `openapi` and `schemas` (the API's description) and
`metrics` (Prometheus).
"""
