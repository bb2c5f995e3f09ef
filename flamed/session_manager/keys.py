"""The session manager's per-message key checks (CURVE): revocation at once, keys tied to nodes.

ZAP admits a key at the handshake only, and a connection lives for as long as its peer keeps
it. So every message is checked again against the allow-lists as they stand when it is read:
a key no longer listed is refused (`Error(Unauthorized)`, counted) on whatever connection it
arrives, and the name the list gives a node key is the node it may speak for. The lists are
re-read when they change on disk, looked at no more than once per loop turn (security.py
`AllowList.refresh`: a stat of the directory; every file once a second) or at once on SIGHUP.

When a list changes, the daemon hands the revocations to the controller: nodes whose key is no
longer allowed go silent at once (no more commands to them), and clients whose key is revoked
lose their watches and subscriptions (no more pushes). To find those clients, the key of each
frontend peer is remembered, for at most `MAX_CLIENT_PEERS` peers (the least recently heard
are forgotten first; their watches still expire without renewals).
"""

from __future__ import annotations

from collections import OrderedDict

from flamed.core.identity import Sender
from flamed.transport.security import CLIENTS, NODES, AllowList, ZapHandler

#: Frontend peers whose key is remembered for revocations (about 100 bytes each).
MAX_CLIENT_PEERS = 65_536


class KeyChecks:
    def __init__(self, zap: ZapHandler) -> None:
        self.clients: AllowList = zap.lists[CLIENTS]
        self.nodes: AllowList = zap.lists[NODES]
        self._client_keys: OrderedDict[bytes, str] = OrderedDict()
        self._refreshed_turn = -1

    def refresh(self, turn: int) -> tuple[bool, bool]:
        """Re-read the lists that changed on disk, at most once per loop `turn`; whether the
        clients' and the nodes' list changed."""
        if turn == self._refreshed_turn:
            return False, False
        self._refreshed_turn = turn
        return self.clients.refresh(), self.nodes.refresh()

    # ------------------------------------------------------------------ per message

    def node_sender(self, user: str) -> Sender | None:
        """Who a backend message with ZAP User-Id `user` comes from; None if its key is not
        (or no longer) allowed."""
        name = self.nodes.name_of(user)
        return None if name is None else Sender(key=user, name=name)

    def node_key_allowed(self, key: str, node: str) -> bool:
        """Whether `key` may still speak for `node` (listed, under that node's name)."""
        return self.nodes.name_of(key) == node

    def client_allowed(self, peer: bytes, user: str) -> bool:
        """Whether a frontend request with ZAP User-Id `user` may be served; remembers the
        peer's key for revocations."""
        if self.clients.name_of(user) is None:
            self._client_keys.pop(peer, None)
            return False
        keys = self._client_keys
        if keys.get(peer) == user:
            keys.move_to_end(peer)
        else:
            keys[peer] = user
            if len(keys) > MAX_CLIENT_PEERS:
                keys.popitem(last=False)
        return True

    def revoked_clients(self) -> list[bytes]:
        """After the clients' list changed: the remembered peers whose key it no longer lists
        (forgotten here)."""
        revoked = [peer for peer, key in self._client_keys.items() if self.clients.name_of(key) is None]
        for peer in revoked:
            del self._client_keys[peer]
        return revoked
