"""The trained-element check every entry point uses (dpa4_core.model.domain)."""

from __future__ import annotations

import logging

import pytest
import torch

from dpa4_core.model.domain import UntrainedElementError, check_elements, untrained_elements


class _Model(torch.nn.Module):
    def __init__(self, elements):
        super().__init__()
        if elements is not None:
            self.trained_elements = elements


def test_foreign_elements_are_refused_by_name():
    model = _Model([41, 42, 73, 74])
    assert untrained_elements(model, [42, 26, 14, 42]) == [14, 26]
    with pytest.raises(UntrainedElementError, match=r"Cu2Mo contains Cu.*trained elements: Nb, Mo, Ta, W"):
        check_elements(model, [29, 29, 42], where="Cu2Mo")


def test_trained_elements_pass_and_override_only_warns(caplog):
    model = _Model([41, 42])
    check_elements(model, [41, 42, 42])
    with caplog.at_level(logging.WARNING, logger="dpa4_core.model.domain"):
        check_elements(model, [26], allow_untrained=True)
    assert "Fe" in caplog.text and "allow_untrained_elements=True" in caplog.text


@pytest.mark.parametrize("elements", [None, []])
def test_a_model_without_a_record_is_not_checked(elements):
    check_elements(_Model(elements), [1, 118])
