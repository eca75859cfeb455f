"""The flows of ``test_state_machine`` drawn often: :class:`CoreAgreement` with the flow rules of
:mod:`machine_flows` only (in :class:`~test_state_machine.StorageAgreement` and
:class:`~test_state_machine.ThreeWayAgreement` they share the draws with every other concern),
on the memory backend and the model, then with the Redis backend on fakeredis too (its flow
scripts: ``add_flow``, the parent side of ``finish`` and of the removals,
``remove_child_dependency``, ``move_to_waiting_children``, ``move_to_delayed``)."""

from __future__ import annotations

from hypothesis import settings
from machine_flows import FlowRules
from test_state_machine import CoreAgreement, ThreeWayAgreement


class FlowAgreement(FlowRules, CoreAgreement):
    """The memory backend and the model: the core job flow, the operator calls and flows."""


FlowAgreement.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestFlowAgreement = FlowAgreement.TestCase


class FlowThreeWayAgreement(FlowAgreement):
    """The same with the Redis backend on fakeredis in lockstep."""

    with_redis = True
    lock_duration_choices = ThreeWayAgreement.lock_duration_choices
    stalled_interval_choices = ThreeWayAgreement.stalled_interval_choices


FlowThreeWayAgreement.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None
)
TestFlowThreeWayAgreement = FlowThreeWayAgreement.TestCase
