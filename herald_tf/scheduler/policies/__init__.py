"""Reference plan policies, one a file (DESIGN §5); the C++ engine implements the same rules."""

from herald_tf.scheduler.policies.herald import HeraldPolicy
from herald_tf.scheduler.policies.het import HetPolicy
from herald_tf.scheduler.policies.ps import PsPolicy
from herald_tf.scheduler.types import PlanPolicy, Policy, SchedulerConfig


def make_policy(config: SchedulerConfig) -> PlanPolicy:
    """The reference policy of ``config.policy``."""
    if config.policy == Policy.PS:
        return PsPolicy()
    if config.policy == Policy.HET:
        return HetPolicy(config.bound)
    return HeraldPolicy()


__all__ = ["HeraldPolicy", "HetPolicy", "PsPolicy", "make_policy"]
