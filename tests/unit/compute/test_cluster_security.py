"""Which Dask security `kiln serve --dask-scheduler` attaches with, and what it refuses."""

from __future__ import annotations

import dask
import pytest

from kiln.compute.cluster_backend import ClusterRefused, cluster_security


def test_plain_tcp_is_refused_unless_asked_for_saying_why() -> None:
    with pytest.raises(ClusterRefused, match="run any code.*--insecure-dask"):
        cluster_security("tcp://10.0.0.1:8786")
    with pytest.raises(ClusterRefused, match="--insecure-dask"):
        cluster_security("10.0.0.1:8786")  # Dask's default protocol is tcp
    assert not cluster_security("tcp://10.0.0.1:8786", insecure=True).require_encryption


def test_tls_needs_a_certificate_from_the_options_or_daskconfig(tmp_path) -> None:
    with pytest.raises(ClusterRefused, match="no certificate is configured"):
        cluster_security("tls://10.0.0.1:8786")
    with pytest.raises(ClusterRefused, match="go together"):
        cluster_security("tls://10.0.0.1:8786", ca_file="ca.pem")
    given = cluster_security("tls://10.0.0.1:8786", ca_file="ca.pem", cert="c.pem", key="k.pem")
    assert given.require_encryption and given.get_tls_config_for_role("client")["cert"] == "c.pem"
    configured = {"distributed.comm.tls.ca-file": "ca.pem", "distributed.comm.tls.client.cert": "c.pem"}
    with dask.config.set(configured):
        assert cluster_security("tls://10.0.0.1:8786").get_tls_config_for_role("client")["ca_file"] == "ca.pem"


def test_other_protocols_are_refused() -> None:
    with pytest.raises(ClusterRefused, match="not ucx://"):
        cluster_security("ucx://10.0.0.1:8786", insecure=True)
