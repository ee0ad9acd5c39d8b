"""The execution plan: a DAG of fingerprinted nodes, and its renderings (table, JSON, dot)."""

from kdlang.plan.builder import Plan, PlanNode, build_plan, needed
from kdlang.plan.render import PLAN_SCHEMA_VERSION, plan_to_dot, plan_to_json
from kdlang.plan.store import Store

__all__ = [
    "PLAN_SCHEMA_VERSION",
    "Plan",
    "PlanNode",
    "Store",
    "build_plan",
    "needed",
    "plan_to_dot",
    "plan_to_json",
]
