"""jobflow Makers running DPA4: relax/static, MD, batched relaxation, stability, fine-tuning."""

from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
from dpa4_flows.jobs.finetune import FineTuneMaker
from dpa4_flows.jobs.md import DPA4MDMaker
from dpa4_flows.jobs.relax import DPA4RelaxMaker, DPA4StaticMaker
from dpa4_flows.jobs.stability import StabilityMaker

__all__ = ["BatchRelaxMaker", "DPA4MDMaker", "DPA4RelaxMaker", "DPA4StaticMaker", "FineTuneMaker", "StabilityMaker"]
