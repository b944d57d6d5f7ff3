"""The DLM policy language: load a policy file, then ask it questions about views.

    from policies import load_policy, ItemView, ReplicaView, StorageView
    policy = load_policy("policies/examples/physics.policy")
    rule = policy.detox.decide(item, replica, storage, now)   # -> Rule(action, label, line, ...)

See docs/policy-language.md for the language and `policies.model` for the objects.
"""

from .context import ItemView, ReplicaView, StorageView
from .errors import Diagnostic, PolicyError
from .loader import load_policy, load_policy_text
from .model import (
    ACTIONS,
    DELETE,
    DISMISS,
    IGNORE,
    PROTECT,
    Balance,
    Condition,
    DealerPolicy,
    DetoxPolicy,
    Limits,
    Partition,
    Placement,
    Policy,
    Popularity,
    Quota,
    Rule,
)

__all__ = [
    "ACTIONS", "DELETE", "DISMISS", "IGNORE", "PROTECT",
    "Balance", "Condition", "DealerPolicy", "DetoxPolicy", "Diagnostic", "ItemView", "Limits",
    "Partition", "Placement", "Policy", "PolicyError", "Popularity", "Quota", "ReplicaView",
    "Rule", "StorageView", "load_policy", "load_policy_text",
]
