"""The atomate2 MD job (dpa4_flows.jobs.md.DPA4MDMaker) takes the shared dpa4 ensemble names and runs each with the
same ASE integrator as the single-system engine (dpa4_core.dynamics.run_md), including the two atomate2 has no
preset for (Nose-Hoover chain NVT, isotropic MTK NPT), which are run here end to end; atomate2's own names keep
atomate2's dynamics choice."""

from __future__ import annotations

from importlib import import_module

import pytest
from atomate2.ase.md import DynamicsPresets, default_dynamics
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Lattice, Structure

from dpa4_core.dynamics.ensembles import ASE_INTEGRATORS, ENSEMBLES, Ensemble
from dpa4_flows.jobs.md import DPA4MDMaker, MDSettingsError

EMT_META = "ase.calculators.emt.EMT"


def _integrator(maker: DPA4MDMaker) -> type:
    """The ASE class atomate2 will run for this maker (its preset table, or the class itself)."""
    dynamics = maker.dynamics or default_dynamics[maker.ensemble]
    if isinstance(dynamics, type):
        return dynamics
    module, _, name = DynamicsPresets[f"{maker.ensemble.value}_{dynamics.replace('-', '_')}"].value.rpartition(".")
    return getattr(import_module(module), name)


@pytest.mark.parametrize("name", [*ENSEMBLES, "nvt"])
def test_each_name_maps_to_the_same_integrator(name):
    maker = DPA4MDMaker(calculator_meta=EMT_META, calculator_kwargs={}, ensemble=name, n_steps=3)
    expected = ASE_INTEGRATORS[Ensemble.NVT_LANGEVIN if name == "nvt" else Ensemble(name)]
    assert issubclass(_integrator(maker), expected)  # the class itself, or atomate2's adapter of it
    assert maker.ensemble.value == name.split("_")[0]


def test_atomate2_names_keep_their_dynamics_choice_and_dpa4_names_fix_it():
    andersen = DPA4MDMaker(calculator_meta=EMT_META, calculator_kwargs={}, ensemble="nvt", dynamics="andersen")
    assert andersen.dynamics == "andersen"
    with pytest.raises(MDSettingsError, match="ensemble='nvt_langevin' runs dynamics='langevin'.*andersen"):
        DPA4MDMaker(calculator_meta=EMT_META, calculator_kwargs={}, ensemble="nvt_langevin", dynamics="andersen")


@pytest.mark.parametrize("name", ["nvt_nose_hoover", "npt_isotropic"])
def test_integrators_without_atomate2_preset_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    maker = DPA4MDMaker(calculator_meta=EMT_META, calculator_kwargs={}, ensemble=name, n_steps=10,
                        temperature=300, pressure=0.0, mb_velocity_seed=2)
    start = Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]) * 2
    job = maker.make(start)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    doc = run_locally(job, store=store, ensure_success=True, log=False)[job.uuid][1].output
    frames = doc.objects["trajectory"].frame_properties
    assert len(frames) == 11 and all(f["temperature"] > 0 for f in frames)
    assert "tdamp" in maker.ase_md_kwargs and ("pdamp" in maker.ase_md_kwargs) == name.startswith("npt")
