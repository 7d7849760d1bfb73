"""jobflow Flows built from the DPA4 jobs."""

from dpa4_flows.flows.screening import ScreeningMaker

__all__ = ["ScreeningMaker"]
