"""The suite never leaves loopback: the guard in pyproject's addopts refuses any other address, and the
processes tests start never ask the instance-metadata service for AWS credentials."""

from __future__ import annotations

import os
import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_a_connection_to_any_other_address_fails_the_test() -> None:
    for address in (("192.0.2.1", 80), ("169.254.169.254", 80)):  # TEST-NET-1; the metadata service
        with (
            socket.socket() as sock,
            pytest.warns(UserWarning, match="tried to use socket"),  # an error under the suite's filterwarnings
            pytest.raises(SocketConnectBlockedError),
        ):
            sock.connect(address)


def test_loopback_stays_open() -> None:
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client.connect(server.getsockname())


def test_subprocesses_inherit_no_metadata_lookups_and_test_credentials() -> None:
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert "AWS_PROFILE" not in os.environ
