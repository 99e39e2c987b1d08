"""What runs on a node, inside its Dask worker; knows nothing of the control plane.

A step runs as ordered hooks (runner): layout (task dir) → environment → resource_files →
process (the command). agent holds the pure bookkeeping of table and answers the control plane's
kiln_* calls; files serves the file API; reaper kills what a dead worker left behind.
"""
