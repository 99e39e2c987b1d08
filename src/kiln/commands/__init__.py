"""Commands: what a request asks of Kiln, between the routers in api/ and the rest.

One module per resource (`pools`, `nodes`, `jobs`, `tasks`, `schedules`, `files`). A command takes the
server's `Control` first and the request's parsed wire model or values after it. It owns the store
transaction, runs the core checks that span objects (a task against its job, a job against the states
it may be updated in), and tells the scheduler after the commit. api/ parses and renders only.

Reads go through commands too (`jobs.get(control, job_id)`): each is one read transaction that also raises
the resource's Batch 404 (and its parent's, for a task or a node). So a router has a single kind of callee,
never sees a connection, and the lookups that writes and reads share (`jobs.load`) live in one place.
The HTTP conditional headers stay parsed in api/: a command that honours them takes them as a `Check`
and runs it on the row it acts on.
"""
