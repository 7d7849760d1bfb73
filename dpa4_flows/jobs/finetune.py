"""FineTuneMaker: run the DPA4 trainer (``dpa4_core.train.finetune``) as a jobflow job.

The dataset is given by path(s) (any format the trainer reads) or by a query on the job store: documents
with ``structure`` and ``energy`` (eV, total), optionally ``forces`` (eV/A) and ``stress`` (eV/A^3, ASE sign,
3x3 or Voigt-6), at the top level or under ``output`` (how jobflow stores job outputs). Queried frames are
written to ``<output_dir>/dataset.extxyz`` for the trainer. The checkpoint's absolute path and sha256 go in
the ``FineTuneDoc``; the metrics and the training log go to the ``data`` additional store.

:func:`committee_flow` makes a committee for ``dpa4 screen --committee``: one FineTuneMaker job per seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import Flow, JobConfig, Maker, job
from pymatgen.core import Structure

from dpa4_flows.jobs.calculators import checkpoint_path, file_sha256
from dpa4_flows.schemas import FineTuneDoc
from dpa4_flows.settings import get_settings

logger = logging.getLogger(__name__)


class FineTuneInputError(ValueError):
    """No dataset, both a path and a query, a query that matched nothing, or a document without labels."""


def _stress_3x3(stress: Any) -> np.ndarray:
    stress = np.asarray(stress, dtype=float)
    if stress.shape == (3, 3):
        return stress
    if stress.shape == (6,):  # Voigt xx, yy, zz, yz, xz, xy (ASE order)
        xx, yy, zz, yz, xz, xy = stress
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise FineTuneInputError(f"stress of shape {stress.shape}; expected (3, 3) or Voigt (6,)")


def frames_from_documents(docs: list[dict]) -> list:
    """ASE Atoms with energy/forces/stress attached (SinglePointCalculator) from labelled documents."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    for i, doc in enumerate(docs):
        body = doc.get("output", doc) if isinstance(doc, dict) else doc
        if not isinstance(body, dict) or body.get("structure") is None or body.get("energy") is None:
            raise FineTuneInputError(f"document {i} ({doc.get('uuid', '?') if isinstance(doc, dict) else doc}) "
                                     "has no 'structure' and 'energy'")
        structure = body["structure"]
        structure = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
        atoms = AseAtomsAdaptor.get_atoms(structure)
        results = {"energy": float(body["energy"])}
        if body.get("forces") is not None:
            forces = np.asarray(body["forces"], dtype=float)
            if forces.shape != (len(atoms), 3):
                raise FineTuneInputError(f"document {i}: forces of shape {forces.shape} for {len(atoms)} atoms")
            results["forces"] = forces
        if body.get("stress") is not None:
            from ase.stress import full_3x3_to_voigt_6_stress

            results["stress"] = full_3x3_to_voigt_6_stress(_stress_3x3(body["stress"]))
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


@dataclass
class FineTuneMaker(Maker):
    """Fine-tune a DPA4 checkpoint on a dataset.

    Args:
        base_model: starting checkpoint (absolute path; default the settings' model).
        config: trainer options (``dpa4_core.train.FinetuneConfig`` fields: steps, batch_size, optim, loss,
            freeze_blocks, data.split, ...); ``data.train``, ``output_dir`` and ``base_checkpoint`` are set
            by the job.
        output_dir: folder for checkpoints and logs (absolute; default ``<job working dir>/dpa4_finetune``).
    """

    name: str = "DPA4 fine-tune"
    base_model: str | None = None
    config: dict = field(default_factory=dict)
    output_dir: str | None = None

    def __post_init__(self) -> None:
        self.base_model = str(Path(self.base_model or get_settings().model).expanduser().resolve())
        if self.output_dir is not None:
            self.output_dir = str(Path(self.output_dir).expanduser().resolve())
        reserved = {"output_dir", "base_checkpoint"} & set(self.config)
        if reserved:
            raise FineTuneInputError(f"config keys {sorted(reserved)} are set by FineTuneMaker; use its fields")

    # expose_store through JobConfig: an unknown keyword of @job would be taken for an additional store name.
    @job(output_schema=FineTuneDoc, data=["training_log", "metrics"], config=JobConfig(expose_store=True))
    def make(self, dataset: str | list[str] | None = None, query: dict | None = None) -> FineTuneDoc:
        """Job: fine-tune on ``dataset`` (path or paths) or on the documents matching ``query`` in the job store."""
        store = None
        if query is not None:
            from jobflow import CURRENT_JOB

            store = CURRENT_JOB.store
        return self.run(dataset, query, store)

    def run(self, dataset: str | list[str] | None = None, query: dict | None = None, store: Any = None) -> FineTuneDoc:
        """Fine-tune outside jobflow (``store``: a JobStore or maggma Store to run ``query`` on)."""
        from dpa4_core.train import finetune

        if (dataset is None) == (query is None):
            raise FineTuneInputError("give exactly one of dataset (path) or query (store documents)")
        base = checkpoint_path(self.base_model)
        out = Path(self.output_dir or Path.cwd() / "dpa4_finetune").resolve()
        out.mkdir(parents=True, exist_ok=True)
        if query is not None:
            if store is None:
                raise FineTuneInputError("a query needs a store")
            docs = list(store.query(criteria=query))
            if not docs:
                raise FineTuneInputError(f"query {query} matched no documents")
            from ase.io import write

            frames = frames_from_documents(docs)
            sources = [str(out / "dataset.extxyz")]
            write(sources[0], frames, format="extxyz")
            source_label = f"store:{query}"
        else:
            paths = [dataset] if isinstance(dataset, str | Path) else list(dataset)
            missing = [str(p) for p in paths if not Path(p).expanduser().exists()]
            if missing:
                raise FineTuneInputError(f"dataset path(s) {missing} do not exist")
            sources = [str(Path(p).expanduser().resolve()) for p in paths]
            source_label = ";".join(sources)

        data = {**dict(self.config.get("data") or {}), "train": sources}
        config = {**self.config, "data": data, "output_dir": str(out), "base_checkpoint": str(base)}
        logger.info("fine-tuning %s on %s into %s", base, source_label, out)
        result = finetune(config)
        checkpoint = Path(result.checkpoint).resolve()
        log_path = Path(result.log_path)
        from dpa4_core.train import load_dataset

        n_frames = len(load_dataset([s for s in sources]))
        return FineTuneDoc(
            checkpoint_path=str(checkpoint),
            checkpoint_sha256=file_sha256(checkpoint),
            last_checkpoint_path=str(Path(result.last_checkpoint).resolve()) if result.last_checkpoint else None,
            base_model=str(base),
            base_model_sha256=file_sha256(base),
            n_frames=n_frames,
            dataset_source=source_label,
            metrics=_plain(result.metrics),
            training_log=log_path.read_text() if log_path.is_file() else None,
            plots=[str(Path(p).resolve()) for p in result.plots],
            config=_plain(config),
        )


def committee_flow(config: dict, seeds: list[int], dataset: str | list[str] | None = None,
                   base_model: str | None = None, output_dir: str | None = None, query: dict | None = None,
                   name: str = "DPA4 committee") -> Flow:
    """One :class:`FineTuneMaker` job per seed (``config["seed"] = k``) into ``<output_dir>/seed<k>``.

    ``config`` is a fine-tuning config as ``dpa4 finetune`` reads it: ``data.train`` is the dataset,
    ``base_checkpoint`` the base model and ``output_dir`` the committee folder unless ``dataset``/``query``,
    ``base_model`` and ``output_dir`` are given. The flow's output is the list of the members' checkpoint paths
    in seed order, what ``ScreeningMaker(committee=...)`` / ``dpa4 screen --committee`` take.
    """
    from dpa4_core.train.finetune import committee_member_dir

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise FineTuneInputError(f"a committee needs distinct seeds, got {seeds}")
    config = dict(config)
    data = dict(config.get("data") or {})
    train = data.pop("train", None)
    if dataset is None and query is None:
        dataset = train
    if (dataset is None) == (query is None):
        raise FineTuneInputError("give exactly one of dataset (or config data.train) and query")
    base_model = base_model or config.pop("base_checkpoint", None)
    output_dir = output_dir or config.pop("output_dir", None) or "dpa4_committee"
    config = {k: v for k, v in config.items() if k not in ("base_checkpoint", "output_dir")}
    if data:
        config["data"] = data
    jobs = []
    for seed in seeds:
        maker = FineTuneMaker(name=f"DPA4 fine-tune seed {seed}", base_model=base_model,
                              config={**config, "seed": seed},
                              output_dir=str(committee_member_dir(output_dir, seed)))
        jobs.append(maker.make(dataset, query))
    return Flow(jobs, output=[j.output.checkpoint_path for j in jobs], name=name)


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy scalars and Paths to plain types)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
