"""Who a backend peer is (DESIGN 6a): its executor manager's secret and, with CURVE, its key.

A node is who its key (CURVE) or its executor manager's secret (plain mode) says. The transport
proves a sender's key (the ZAP handshake, then the allow-list as it stands when the message is
read) and hands the core a `Sender`; the node links apply these rules with it:

- a registration that names the node's current incarnation claims to be the same executor
  manager coming back (keep my executors, send me their tasks). It is that only if its secret
  hashes to the hash kept with the node. The incarnation is public (ListNodes shows it), the
  secret never leaves the backend link, and only its hash is stored (log and snapshots), so
  nothing a client can read, and nothing on the session manager's disk, answers for it;
- a registration that is not the same executor manager keeps nothing of the node, whatever
  executors it lists: at best it is a restarted executor manager (DESIGN 5, RFE384 row 3);
- a goodbye for a node loaded at a restart is taken only with that process's secret;
- with CURVE, a registration comes with the key the allow-list names after the node, and every
  later message of the link with the very key that registered it;
- a connection registered as one node speaks for no other.

A node whose hash is "" (registered by an executor manager older than secrets, or recorded in
a log written before them) is recognised by its incarnation alone, as before.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flamed.core.state import NodeEntry

#: Domain separation: this hash is only ever compared with another of its kind.
_HASH_PREFIX = b"flame node secret v1\0"


def secret_hash(secret: str) -> str:
    """What the session manager keeps of an executor manager's secret ("" for none). The secret
    is 256 random bits, so a plain SHA-256 cannot be searched back to it."""
    if not secret:
        return ""
    return hashlib.sha256(_HASH_PREFIX + secret.encode()).hexdigest()


def same_process(node: NodeEntry | None, incarnation: str, secret: str) -> bool:
    """Whether a registration (or goodbye) naming `incarnation` with `secret` comes from the
    executor manager process that registered `node` last."""
    if node is None or not incarnation or incarnation != node.incarnation:
        return False
    if not node.secret_hash:
        return True  # an older executor manager: its incarnation is all it has
    return hmac.compare_digest(node.secret_hash, secret_hash(secret))


@dataclass(frozen=True)
class Sender:
    """Who sent a backend message, as the transport proved it: the sender's CURVE key (Z85)
    and the node name the allow-list gives that key. Both are "" in plain mode."""

    key: str = ""
    name: str = ""

    @property
    def curve(self) -> bool:
        return bool(self.key)


PLAIN = Sender()


def key_refusal(claimed: str, sender: Sender) -> str | None:
    """CURVE: why `sender` may not speak for node `claimed` (None if it may, or in plain mode)."""
    if not sender.curve or sender.name == claimed:
        return None
    return f"it claims node {claimed!r} but its key is that of node {sender.name!r}"


def link_key_refusal(name: str, link_key: str, sender: Sender) -> str | None:
    """Why a message on the link of node `name`, registered with `link_key`, is refused: it
    must come with that very key (a key file replaced under the same name is another key). In
    plain mode both are ""."""
    if sender.key == link_key:
        return None
    if sender.curve and sender.name != name:
        return f"it speaks on node {name!r}'s connection but its key is that of node {sender.name!r}"
    return f"it speaks for node {name!r} with a key other than the one that registered it"
