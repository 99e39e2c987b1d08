"""What runs on a node, inside its Dask worker; knows nothing of the control plane.

A step runs as ordered hooks (runner): layout (task dir) → environment → resource_files →
process (the command, started by one of the node's launcher processes through spawner, so the worker
never forks and no command outlives its worker). agent holds the pure bookkeeping of table and answers
the control plane's kiln_* calls; files serves the file API; reaper kills what a worker killed
together with its launcher left behind.
"""
