"""Domain errors of the policy engines. No HTTP here: `api` maps these to problem details.

A policy error always means "no decision", so the gate fails closed: nothing is read.
"""

from __future__ import annotations


class PolicyError(Exception):
    """Base of every error the policy side raises on purpose."""


class PolicyUnavailable(PolicyError):
    """The engine cannot be reached or has no capacity (OPA down, pool exhausted)."""


class PolicyEngineFault(PolicyError):
    """An evaluation ran but gave no usable decision: it crashed, was undefined,
    returned a malformed document, or ran under a revision other than the expected one."""


class PolicyInputError(PolicyError, ValueError):
    """The decision input is malformed (e.g. a field named twice); a bug of the caller."""


class StalePolicyError(PolicyError):
    """The compiled policy shipped with the package does not match its Rego sources."""
