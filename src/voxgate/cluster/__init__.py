"""Several gateways as one: what they share through Redis when `redis_url` is set.

    node.py         this gateway in the cluster: its heartbeat and load, the registry of which node holds
                    which call, lost nodes' calls closed as dropped, control requests relayed to a call's node
    relay.py        a relayed control request and its answer (the wire format), and running one here
    call_control.py the route wrapper that carries a control action to the node holding the call
    load_report.py  HAProxy's agent-check: this node's spare capacity, "drain" while draining

Rate limits shared across nodes are `control/rate_limit.py`'s `SharedRateLimits`. Ephemeral keys need
nothing here: they live in the shared database, where spending one is a single atomic UPDATE, so a key
minted on one node opens one session on any node, once. Without `redis_url` none of this runs.
"""
