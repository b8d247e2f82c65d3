"""A test kit for plugin authors: run a plugin in-process as the worker does, and check
its contract. See the README's plugin guide.

    harness = PluginHarness.load("tagger")
    bodies = harness.results(events)
    check_contract(lambda: PluginHarness.load("tagger"), events)
"""

from streamproc.testing.contract import ContractReport, ContractViolation, check_contract
from streamproc.testing.harness import PluginFailed, PluginHarness

__all__ = ["ContractReport", "ContractViolation", "PluginFailed", "PluginHarness", "check_contract"]
