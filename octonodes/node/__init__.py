"""The node loop (`node run`), split by job.

- `loop`: `Worker`, the loop itself: `run()`, and `run_once(now)`, one step.
- `registration`: the host's lock on the name, and registering it.
- `checkin`: the fence first, then the check-in and what follows it.
- `exchange`: recording output and task ends, and claiming (one transaction).
- `held`: the tasks this process holds, and the batching of their ends.
- `liveness`: when to check in and when to fence, as pure functions.
- `shutdown`: warm and cold stop requests.
- `clock`: the monotonic and boot clocks, injected.
"""
