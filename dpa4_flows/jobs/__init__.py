"""jobflow Makers running DPA4: relax/static, MD, batched relaxation, stability, fine-tuning."""

from dpa4_flows.jobs.relax import DPA4RelaxMaker, DPA4StaticMaker

__all__ = ["DPA4RelaxMaker", "DPA4StaticMaker"]
