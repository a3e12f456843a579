"""Starting embedded Redis: a server that refuses the first pings is waited for, not given up on."""

from __future__ import annotations

import pytest
import redis

from server.embedded import wait_until_answering


class Starting:
    """A client whose server refuses ``refusals`` pings, then answers."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        if self.pings <= self.refusals:
            raise redis.ConnectionError("Error 111 connecting to redis.socket. Connection refused.")
        return True


def test_a_refused_ping_right_after_start_is_tried_again() -> None:
    client = Starting(refusals=3)
    wait_until_answering(client, timeout_s=5)
    assert client.pings == 4


def test_a_server_that_never_answers_fails_after_the_timeout() -> None:
    client = Starting(refusals=10**9)
    with pytest.raises(redis.ConnectionError):
        wait_until_answering(client, timeout_s=0.2)
    assert client.pings > 1
