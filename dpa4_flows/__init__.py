"""dpa4_flows: DPA4 as jobflow jobs and flows (relax, static, MD, stability, fine-tuning, screening)."""
