"""The screening committee (issue 15): members compute single points of the main model's relaxed structures.

Two real checkpoints: the shipped starter and a second one fine-tuned from it in the test (3 steps on vendored Mo
elastic frames, seed 7). A committee of the main model alone reproduces its energies above the hull with zero
spread; a second member adds a spread, and the flag follows the hand rule ``mean - k std <= 0 < mean + k std``.
"""

from __future__ import annotations

import pytest
from jobflow import run_locally

from dpa4_flows.jobs.committee import committee_stats

CONFIG = {"steps": 3, "batch_size": 2, "valid_every": 3, "checkpoint_every": 3, "plots": False, "seed": 7,
          "progress": False, "data": {"max_frames": 6, "split": {"valid": 0.25, "seed": 7}}, "max_valid_frames": 2}


@pytest.mark.parametrize(("values", "main", "expected"), [
    ([0.0, 0.0], 0.0, (0.0, 0.0, False)),          # both on the hull: certain
    ([0.0, 0.02], 0.0, (0.01, 0.014142, True)),      # one member puts it 20 meV above: could flip
    ([0.10, 0.12], 0.11, (0.11, 0.014142, False)),   # clearly above within the spread
    ([0.10, 0.12], 0.0, (0.11, 0.014142, True)),     # the main model's call differs from the committee's
    ([0.05], 0.05, (0.05, 0.0, False)),              # one member: no spread
])
def test_committee_stats_by_hand(values, main, expected):
    mean, std, uncertain = committee_stats(values, main, k=1.0)
    assert mean == pytest.approx(expected[0]) and std == pytest.approx(expected[1], abs=1e-6)
    assert uncertain is expected[2]


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory):
    from dpa4_core.data.paths import vendored
    from dpa4_core.pretrained import STARTER
    from dpa4_flows.jobs.finetune import FineTuneMaker

    out = tmp_path_factory.mktemp("ft")
    doc = FineTuneMaker(base_model=str(STARTER), config=CONFIG, output_dir=str(out)).run(
        str(vendored("maml_MoNbTaW", "Mo_Elastic.json.gz")))
    return doc.checkpoint_path


@pytest.mark.timeout(240)
def test_committee_spread_and_md_in_the_screening_flow(second_checkpoint):
    from dpa4_core.pretrained import STARTER
    from dpa4_flows.execution.stores import memory_store
    from dpa4_flows.flows.screening import ScreeningMaker
    from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
    from dpa4_flows.structures.candidates import bcc_orderings

    cands = bcc_orderings(["Mo", "W"])
    ids = sorted(cands)[:3]
    relax = BatchRelaxMaker(calculator_kwargs={"model": str(STARTER), "device": "cpu", "dtype": "float32"},
                            max_steps=60, progress=False)
    maker = ScreeningMaker(relax_maker=relax, chunk_size=2, prototypes=("bcc",), md_temperatures=(300.0,),
                           md_steps=20, md_threshold=10.0, committee=(str(STARTER), second_checkpoint))
    flow = maker.make([cands[i] for i in ids], ids)
    assert [j.name for j in flow.jobs][-3:] == ["DPA4 MD 300 K", "DPA4 committee", "DPA4 screening report"]
    responses = run_locally(flow, store=memory_store(), ensure_success=True, log=False)
    outputs = {j.name: responses[j.uuid][1].output for j in flow.jobs}
    report = outputs["DPA4 screening report"]
    rows = {r.candidate_id: r for r in report.rows if r.status == "ranked"}
    assert rows
    assert any(r.e_above_hull_std > 1e-4 for r in rows.values())  # two different models
    for row in rows.values():
        assert row.e_above_hull_std > 1e-4 or row.e_above_hull_mean == 0  # equal only where both put it on the hull
        members = [row.e_above_hull_mean - row.e_above_hull_std / 2 ** 0.5,
                   row.e_above_hull_mean + row.e_above_hull_std / 2 ** 0.5]
        assert row.stability_uncertain is committee_stats(members, row.e_above_hull, 1.0)[2]
        assert [c.temperature for c in row.md] == [300.0] and row.md_verdict == f"300K {row.md[0].verdict}"
    # The starter as the only member: its single points are the main model's energies: zero spread, same values.
    from dpa4_flows.jobs.committee import committee_docs

    relaxations = [v for k, v in outputs.items() if k.startswith("DPA4 batch relax")]
    alone = committee_docs(relaxations, [outputs["DPA4 elemental references"]], None,
                           outputs["DPA4 stability"], [str(STARTER)])
    assert {d.candidate_id for d in alone.docs} == {r.candidate_id for r in report.rows if r.e_above_hull is not None}
    main = {r.candidate_id: r.e_above_hull for r in report.rows}
    for doc in alone.docs:
        assert doc.std == 0 and doc.mean == pytest.approx(main[doc.candidate_id], abs=2e-5)
